//! Merge rules per target-branch pattern (most specific pattern wins, delete falls back), the
//! refresh after a push touching only the change requests of moved branches, protected tags
//! with real `git push`, and the wording of the push size refusal. Both databases.

use std::path::{Path, PathBuf};

use crate::code_hosting::{Git, app_with_main, member, with_credentials};
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPO: &str = "/api/v1/projects/demo/repos/app";

/// A repository `app` with `main` pushed by the admin; returns (git, work dir, clone URL).
async fn setup(s: &TestServer) -> (Git, PathBuf, String) {
    app_with_main(s, "README.md", "hello\n").await
}

/// Commits on branch `name` (created from `from`) and pushes it; returns the head.
async fn branch(git: &Git, work: &Path, name: &str, from: &str, file: &str) -> String {
    git.run(work, &["checkout", "-q", "-B", name, from]).await;
    let head = git
        .commit(
            work,
            file,
            &format!("{name}\n"),
            &format!("Change on {name}"),
        )
        .await;
    git.run(work, &["push", "-q", "origin", name]).await;
    head
}

async fn open_cr(s: &TestServer, source: &str, target: &str) -> i64 {
    let (st, cr) = s
        .admin(
            Method::POST,
            &format!("{REPO}/change-requests"),
            Some(json!({"source": source, "target": target, "title": format!("{source} into {target}")})),
        )
        .await;
    assert_eq!(st, 201, "{cr}");
    cr["number"].as_i64().unwrap()
}

async fn gate(s: &TestServer, number: i64) -> Value {
    let (st, view) = s
        .admin(
            Method::GET,
            &format!("{REPO}/change-requests/{number}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{view}");
    view["gate"].clone()
}

fn approvals(gate: &Value) -> String {
    gate["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "approvals")
        .map(|c| c["message"].as_str().unwrap().to_string())
        .unwrap()
}

async fn approve(s: &TestServer, token: &str, number: i64) {
    let (st, b) = s
        .call(
            Method::POST,
            &format!("{REPO}/change-requests/{number}/reviews"),
            Some(token),
            Some(json!({"verdict": "approve"})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
}

fn rules(approvals: u32) -> Value {
    json!({"merge_method": "merge", "required_approvals": approvals, "required_checks": [],
           "dismiss_stale_approvals": true})
}

#[tokio::test]
async fn merge_rules_apply_per_target_branch_pattern() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let ann = member(&s, "ann", "developer").await;
        let bob = member(&s, "bob", "developer").await;
        let viewer = member(&s, "vic", "viewer").await;
        let (git, work, _) = setup(&s).await;
        branch(&git, &work, "release/1.0", "main", "release.txt").await;
        branch(&git, &work, "fix-main", "main", "a.txt").await;
        branch(&git, &work, "fix-rel", "release/1.0", "b.txt").await;
        branch(&git, &work, "fix-rel2", "release/1.0", "c.txt").await;

        // The repository default (the old single rule set) keeps its routes and meaning.
        let (st, b) = s
            .admin(Method::PUT, &format!("{REPO}/merge-rules"), Some(rules(3)))
            .await;
        assert_eq!(st, 200, "{b}");
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules/branches/main"),
                Some(rules(1)),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["pattern"], "main");
        // The pattern is URL-encoded in the path.
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules/branches/release%2F*"),
                Some(rules(2)),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["pattern"], "release/*");
        assert_eq!(b["rules"]["required_approvals"], 2);
        let (st, list) = s
            .call(
                Method::GET,
                &format!("{REPO}/merge-rules/branches"),
                Some(&viewer),
                None,
            )
            .await;
        assert_eq!(st, 200, "{list}");
        let patterns: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["pattern"].as_str().unwrap())
            .collect();
        assert_eq!(patterns, vec!["main", "release/*"], "{}", db.name());
        let (_, default) = s
            .admin(Method::GET, &format!("{REPO}/merge-rules"), None)
            .await;
        assert_eq!(default["required_approvals"], 3);

        // Bad input and permissions.
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules/branches/a..b"),
                Some(rules(1)),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        assert_eq!(b["error"]["details"]["field"], "pattern");
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules/branches/x"),
                Some(rules(21)),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        assert_eq!(b["error"]["details"]["field"], "required_approvals");
        let (st, _) = s
            .call(
                Method::PUT,
                &format!("{REPO}/merge-rules/branches/x"),
                Some(&ann),
                Some(rules(0)),
            )
            .await;
        assert_eq!(st, 403);

        // main needs 1 approval, release/1.0 (through release/*) needs 2.
        let to_main = open_cr(&s, "fix-main", "main").await;
        let to_rel = open_cr(&s, "fix-rel", "release/1.0").await;
        let g = gate(&s, to_main).await;
        assert_eq!(g["rules_pattern"], "main");
        assert_eq!(approvals(&g), "0 of 1 required approval(s)");
        approve(&s, &ann, to_main).await;
        approve(&s, &ann, to_rel).await;
        let g = gate(&s, to_rel).await;
        assert_eq!(g["rules_pattern"], "release/*");
        assert_eq!(approvals(&g), "1 of 2 required approval(s)");
        assert_eq!(g["mergeable"], false);
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests/{to_rel}/merge"),
                None,
            )
            .await;
        assert_eq!(st, 409, "{b}");
        assert_eq!(b["error"]["details"]["conditions"][0]["id"], "approvals");
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests/{to_main}/merge"),
                None,
            )
            .await;
        assert_eq!(st, 200, "one approval is enough for main: {b}");
        approve(&s, &bob, to_rel).await;
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests/{to_rel}/merge"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{b}");

        // An exact name beats the glob.
        let next = open_cr(&s, "fix-rel2", "release/1.0").await;
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules/branches/release%2F1.0"),
                Some(rules(0)),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        let g = gate(&s, next).await;
        assert_eq!(g["rules_pattern"], "release/1.0");
        assert_eq!(g["mergeable"], true, "{g}");

        // Deleting falls back: to the glob, then to the repository default.
        let (st, _) = s
            .admin(
                Method::DELETE,
                &format!("{REPO}/merge-rules/branches/release%2F1.0"),
                None,
            )
            .await;
        assert_eq!(st, 204);
        let g = gate(&s, next).await;
        assert_eq!(g["rules_pattern"], "release/*");
        assert_eq!(approvals(&g), "0 of 2 required approval(s)");
        let (st, _) = s
            .admin(
                Method::DELETE,
                &format!("{REPO}/merge-rules/branches/release%2F*"),
                None,
            )
            .await;
        assert_eq!(st, 204);
        let g = gate(&s, next).await;
        assert_eq!(g["rules_pattern"], Value::Null);
        assert_eq!(approvals(&g), "0 of 3 required approval(s)");
        let (st, b) = s
            .admin(
                Method::DELETE,
                &format!("{REPO}/merge-rules/branches/release%2F*"),
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&b)),
            (404, "code.merge_rules_not_found".into()),
            "{b}"
        );
        s.stop().await;
    }
}

/// (updated_at, version, head) of a change request as stored (the list does not refresh).
async fn stored(s: &TestServer, number: i64) -> (Value, Value, Value) {
    let (st, list) = s
        .admin(Method::GET, &format!("{REPO}/change-requests"), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let cr = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number"] == number)
        .unwrap()
        .clone();
    (
        cr["updated_at"].clone(),
        cr["version"].clone(),
        cr["state"].clone(),
    )
}

#[tokio::test]
async fn a_push_refreshes_only_change_requests_of_the_moved_branches() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work, _) = setup(&s).await;
        branch(&git, &work, "feature", "main", "f.txt").await;
        branch(&git, &work, "other", "main", "o.txt").await;
        let number = open_cr(&s, "feature", "main").await;
        let before = stored(&s, number).await;
        let (_, events) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.updated",
                None,
            )
            .await;
        let updates = events["items"].as_array().unwrap().len();

        // Unrelated pushes: a new commit on `other`, a new branch.
        git.run(&work, &["checkout", "-q", "other"]).await;
        git.commit(&work, "o.txt", "more\n", "More").await;
        git.run(&work, &["push", "-q", "origin", "other"]).await;
        branch(&git, &work, "third", "main", "t.txt").await;
        assert_eq!(stored(&s, number).await, before, "{}", db.name());
        let (_, events) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.updated",
                None,
            )
            .await;
        assert_eq!(events["items"].as_array().unwrap().len(), updates);

        // A push to the source updates it; a push that lands it on the target merges it.
        git.run(&work, &["checkout", "-q", "feature"]).await;
        let head = git.commit(&work, "f.txt", "again\n", "Again").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let after = stored(&s, number).await;
        assert_ne!(after.1, before.1, "the source moved: the version changes");
        assert_eq!(after.2, "open");
        git.run(
            &work,
            &["push", "-q", "origin", &format!("{head}:refs/heads/main")],
        )
        .await;
        assert_eq!(stored(&s, number).await.2, "merged");
        s.stop().await;
    }
}

#[tokio::test]
async fn protected_tags_are_created_by_maintainers_and_never_moved() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let maint = member(&s, "maint", "maintainer").await;
        let (git, work, url) = setup(&s).await;
        let first = git
            .run(&work, &["rev-parse", "HEAD"])
            .await
            .trim()
            .to_string();
        let second = git.commit(&work, "x.txt", "x\n", "Second").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let tags = format!("{REPO}/protected-tags");
        let (st, b) = s
            .call(Method::PUT, &tags, Some(&dev), Some(json!(["v*"])))
            .await;
        assert_eq!(st, 403, "{b}");
        let (st, b) = s
            .call(Method::PUT, &tags, Some(&maint), Some(json!(["v 1"])))
            .await;
        assert_eq!(st, 422, "{b}");
        assert_eq!(b["error"]["details"]["field"], "protected_tags");
        let (st, b) = s
            .call(
                Method::PUT,
                &tags,
                Some(&maint),
                Some(json!(["refs/tags/v*"])),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b, json!(["v*"]));
        let (_, rules) = s
            .admin(Method::GET, &format!("{REPO}/push-rules"), None)
            .await;
        assert_eq!(rules["protected_tags"], json!(["v*"]));

        let dev_url = with_credentials(&url, "dev", &dev);
        let maint_url = with_credentials(&url, "maint", &maint);
        git.run(&work, &["tag", "v1.0", &first]).await;
        git.run(&work, &["tag", "build-1", &first]).await;
        // A developer cannot create a protected tag, but can push others.
        let (ok, out) = git
            .try_run(&work, &["push", &dev_url, "refs/tags/v1.0"])
            .await;
        assert!(!ok, "{out}");
        assert!(
            out.contains("tag v1.0 is protected (pattern \"v*\")"),
            "{out}"
        );
        assert!(
            out.contains("creating it needs the maintainer role; you are developer"),
            "{out}"
        );
        git.run(&work, &["push", "-q", &dev_url, "refs/tags/build-1"])
            .await;
        // A maintainer can.
        git.run(&work, &["push", "-q", &maint_url, "refs/tags/v1.0"])
            .await;
        let remote = |name: &str| {
            let name = name.to_string();
            let git = &git;
            let work = work.clone();
            let url = maint_url.clone();
            async move { git.run(&work, &["ls-remote", &url, &name]).await }
        };
        assert!(remote("refs/tags/v1.0").await.starts_with(&first));
        // Nobody moves or deletes it, not even a maintainer.
        git.run(&work, &["tag", "-f", "v1.0", &second]).await;
        let (ok, out) = git
            .try_run(&work, &["push", "-f", &maint_url, "refs/tags/v1.0"])
            .await;
        assert!(!ok, "{out}");
        assert!(out.contains("cannot be moved"), "{out}");
        assert!(out.contains("Create a new tag"), "{out}");
        let (ok, out) = git
            .try_run(&work, &["push", &s_admin(&s, &url), ":refs/tags/v1.0"])
            .await;
        assert!(!ok, "{out}");
        assert!(out.contains("cannot be deleted"), "{out}");
        assert!(
            remote("refs/tags/v1.0").await.starts_with(&first),
            "{}",
            db.name()
        );
        // The unprotected tag can be deleted.
        git.run(&work, &["push", "-q", &dev_url, ":refs/tags/build-1"])
            .await;
        let (_, events) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=code.push_rejected",
                None,
            )
            .await;
        let rules: Vec<&str> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"]["rule"].as_str().unwrap_or(""))
            .collect();
        for r in [
            "protected_tag.create",
            "protected_tag.move",
            "protected_tag.delete",
        ] {
            assert!(rules.contains(&r), "{r} in {rules:?}");
        }
        s.stop().await;
    }
}

fn s_admin(s: &TestServer, url: &str) -> String {
    with_credentials(url, "admin", &s.admin_token)
}

#[tokio::test]
async fn a_push_over_the_size_limit_reads_like_git_and_says_how_to_change_it() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st| st.push_max_bytes = 20000,
                ..Options::default()
            },
        )
        .await;
        s.demo_project().await;
        let (git, work, _) = setup(&s).await;
        // Incompressible content well over the limit.
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let noise: String = (0..120_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x >> 58) as u8)
            })
            .collect();
        git.run(&work, &["checkout", "-q", "-b", "noise"]).await;
        git.commit(&work, "noise.txt", &noise, "Noise").await;
        let (ok, out) = git.try_run(&work, &["push", "origin", "noise"]).await;
        assert!(!ok, "{out}");
        // git's own words, then Ouro's with the limit and where to change it.
        assert!(out.contains("pack exceeds maximum allowed size"), "{out}");
        assert!(
            out.contains(
                "remote: ouro: push refused: pack exceeds maximum allowed size: the limit is 19.5 KiB (20000 bytes) per push; no ref was changed."
            ),
            "{out}"
        );
        assert!(out.contains("max_push_bytes"), "{out}");
        assert!(out.contains("Largest push"), "{out}");
        let (_, events) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=code.push_rejected",
                None,
            )
            .await;
        let e = &events["items"][0]["payload"];
        assert_eq!(e["rule"], "limit.push_size", "{e}");
        s.stop().await;
    }
}

#[tokio::test]
async fn the_merge_rules_page_adds_edits_and_deletes_patterns() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work, _) = setup(&s).await;
        branch(&git, &work, "release/2.0", "main", "r.txt").await;
        branch(&git, &work, "fix", "release/2.0", "f.txt").await;
        let page = "/projects/demo/code/app/settings/merge";
        let (st, html) = s.admin_page(page).await;
        assert_eq!(st, 200);
        assert!(html.contains("id=\"no-branch-rules\""), "{html}");
        let fields = |pattern: &'static str, approvals: &'static str| {
            form_body(&[
                ("pattern", pattern),
                ("merge_method", "squash"),
                ("required_approvals", approvals),
                ("required_checks", "ci/build, ci/test"),
            ])
        };
        let (st, location, _) = s
            .admin_form(&format!("{page}/branches"), fields("release/*", "2"))
            .await;
        assert_eq!((st, location.as_str()), (303, page));
        let (_, html) = s.admin_page(page).await;
        assert!(html.contains("<h3><code>release/*</code></h3>"), "{html}");
        assert!(!html.contains("id=\"no-branch-rules\""), "{html}");
        assert!(html.contains("value=\"ci/build, ci/test\""), "{html}");
        // Editing is saving the same pattern again.
        let (st, _, _) = s
            .admin_form(&format!("{page}/branches"), fields("release/*", "4"))
            .await;
        assert_eq!(st, 303);
        let (_, list) = s
            .admin(Method::GET, &format!("{REPO}/merge-rules/branches"), None)
            .await;
        assert_eq!(list[0]["rules"]["required_approvals"], 4);
        assert_eq!(list[0]["rules"]["merge_method"], "squash");
        assert_eq!(list[0]["rules"]["dismiss_stale_approvals"], false);
        // The change request page names the rule set that applies.
        let n = open_cr(&s, "fix", "release/2.0").await;
        let (_, html) = s
            .admin_page(&format!("/projects/demo/code/app/change-requests/{n}"))
            .await;
        assert!(html.contains("rules for <code>release/*</code>"), "{html}");
        // Bad input: the page again with the message.
        let (st, _, html) = s
            .admin_form(&format!("{page}/branches"), fields("a..b", "1"))
            .await;
        assert_eq!(st, 422);
        assert!(html.contains("not a valid branch pattern"), "{html}");
        // Delete.
        let (st, _, _) = s
            .admin_form(
                &format!("{page}/branches/delete"),
                form_body(&[("pattern", "release/*")]),
            )
            .await;
        assert_eq!(st, 303);
        let (_, html) = s.admin_page(page).await;
        assert!(!html.contains("<h3><code>release/*</code></h3>"), "{html}");
        assert!(html.contains("id=\"no-branch-rules\""), "{html}");
        let (_, html) = s
            .admin_page(&format!("/projects/demo/code/app/change-requests/{n}"))
            .await;
        assert!(
            html.contains("the repository&#x27;s default rules")
                || html.contains("the repository's default rules"),
            "{html}"
        );

        // The push rules page shows and saves protected tags.
        let settings = "/projects/demo/code/app/settings";
        let (st, _, body) = s
            .admin_form(
                settings,
                form_body(&[("rows", "0"), ("protected_tags", "v*, rel/**")]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        let (_, rules) = s
            .admin(Method::GET, &format!("{REPO}/push-rules"), None)
            .await;
        assert_eq!(rules["protected_tags"], json!(["v*", "rel/**"]));
        let (_, html) = s.admin_page(settings).await;
        assert!(html.contains("value=\"v*, rel/**\""), "{html}");
        s.stop().await;
    }
}
