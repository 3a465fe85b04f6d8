//! Change requests end to end with real git over HTTP: open, blocked by the gate until a status
//! and an approval arrive, merged by Ouro; each merge method; conflicts; dismissal of stale
//! approvals; unrelated histories; who may do what.

use std::path::{Path, PathBuf};

use crate::code_hosting::{Git, app_with_main, member, with_credentials};
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPO: &str = "/api/v1/projects/demo/repos/app";

/// A repository `app` with `main` pushed by the admin; returns (git, work dir, clone URL).
async fn setup(s: &TestServer) -> (Git, PathBuf, String) {
    let (git, work, url) = app_with_main(s, "README.md", "hello\n").await;
    (git, work, with_credentials(&url, "admin", &s.admin_token))
}

/// Commits on a new branch from `from` and pushes it; returns the head.
async fn branch(
    git: &Git,
    work: &Path,
    name: &str,
    from: &str,
    file: &str,
    content: &str,
) -> String {
    git.run(work, &["checkout", "-q", "-B", name, from]).await;
    let head = git
        .commit(work, file, content, &format!("Change on {name}"))
        .await;
    git.run(work, &["push", "-q", "-f", "origin", name]).await;
    head
}

fn unmet(body: &Value) -> Vec<String> {
    body["error"]["details"]["conditions"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_change_request_is_blocked_until_a_status_and_an_approval_then_merges() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let viewer = member(&s, "viewer", "viewer").await;
        let (git, work, url) = setup(&s).await;
        let head = branch(&git, &work, "feature", "main", "feature.txt", "new\n").await;
        let (st, rules) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules"),
                Some(json!({"merge_method": "merge", "required_approvals": 1, "required_checks": ["ci"],
                            "dismiss_stale_approvals": true})),
            )
            .await;
        assert_eq!(st, 200, "{rules}");

        // Validation first.
        for (body, field) in [
            (
                json!({"source": "nope", "target": "main", "title": "x"}),
                "source",
            ),
            (
                json!({"source": "feature", "target": "feature", "title": "x"}),
                "target",
            ),
            (
                json!({"source": "feature", "target": "main", "title": " "}),
                "title",
            ),
            (
                json!({"source": "a..b", "target": "main", "title": "x"}),
                "source",
            ),
        ] {
            let (st, b) = s
                .admin(Method::POST, &format!("{REPO}/change-requests"), Some(body))
                .await;
            assert_eq!(st, 422, "{b}");
            assert_eq!(b["error"]["details"]["field"], field, "{b}");
        }

        // The contract: open → 201 with a number. An item named in the text gets linked.
        let (st, item) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/items",
                Some(json!({"type": "story", "title": "The feature"})),
            )
            .await;
        assert_eq!(st, 201, "{item}");
        let key = item["key"].as_str().unwrap().to_string();
        let (st, cr) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(
                    json!({"source": "feature", "target": "main", "title": "Add the feature",
                            "description": format!("Implements {key}.")}),
                ),
            )
            .await;
        assert_eq!(st, 201, "{cr}");
        assert_eq!(cr["number"], 1);
        assert_eq!(cr["head"], json!(head));
        assert_eq!(cr["state"], "open");
        let one = format!("{REPO}/change-requests/1");

        // Blocked: no approval, no status. 409 lists exactly the unmet conditions.
        let (st, b) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert_eq!(
            (st, error_code(&b)),
            (409, "code.merge_blocked".into()),
            "{b}"
        );
        assert_eq!(unmet(&b), vec!["approvals", "checks"], "{b}");
        let (_, view) = s.admin(Method::GET, &one, None).await;
        assert_eq!(view["gate"]["mergeable"], false);
        let ids: Vec<&str> = view["gate"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec![
                "open",
                "draft",
                "approvals",
                "changes_requested",
                "checks",
                "conflicts"
            ]
        );

        // The author cannot approve; a viewer cannot review or merge.
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{one}/reviews"),
                Some(json!({"verdict": "approve"})),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        let (st, _) = s
            .call(
                Method::POST,
                &format!("{one}/reviews"),
                Some(&viewer),
                Some(json!({"verdict": "approve"})),
            )
            .await;
        assert_eq!(st, 403);
        let (st, _) = s
            .call(Method::POST, &format!("{one}/merge"), Some(&viewer), None)
            .await;
        assert_eq!(st, 403);

        // A status (the latest per name counts) and an approval.
        let statuses = format!("{REPO}/commits/{head}/statuses");
        for state in ["pending", "failure"] {
            let (st, b) = s
                .admin(
                    Method::POST,
                    &statuses,
                    Some(json!({"name": "ci", "state": state})),
                )
                .await;
            assert_eq!(st, 201, "{b}");
        }
        let (_, b) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert!(
            unmet(&b).contains(&"checks".to_string()),
            "a failed check blocks: {b}"
        );
        let (st, b) = s
            .admin(
                Method::POST,
                &statuses,
                Some(json!({"name": "ci", "state": "success", "url": "https://ci.example.com/1", "description": "green"})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let (_, list) = s.admin(Method::GET, &statuses, None).await;
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list[0]["state"], "success");
        let (st, b) = s
            .admin(
                Method::POST,
                &statuses,
                Some(json!({"name": "ci", "state": "green"})),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{REPO}/commits/{}/statuses", "0".repeat(40)),
                Some(json!({"name": "ci", "state": "success"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&b)),
            (404, "code.commit_not_found".into()),
            "{b}"
        );
        let (_, b) = s
            .call(Method::POST, &format!("{one}/merge"), Some(&dev), None)
            .await;
        assert_eq!(unmet(&b), vec!["approvals"], "{b}");
        let (st, r) = s
            .call(
                Method::POST,
                &format!("{one}/reviews"),
                Some(&dev),
                Some(json!({"verdict": "approve", "body": "LGTM"})),
            )
            .await;
        assert_eq!(st, 201, "{r}");
        let (_, view) = s.admin(Method::GET, &one, None).await;
        assert_eq!(view["gate"]["mergeable"], true, "{view}");

        // The contract: merge → 200; the target in a fresh clone has the change, as a merge commit.
        let (st, merged) = s
            .call(
                Method::POST,
                &format!("{one}/merge"),
                Some(&dev),
                Some(json!({"delete_source": true})),
            )
            .await;
        assert_eq!(st, 200, "{merged}");
        assert_eq!(merged["state"], "merged");
        assert_eq!(merged["merged_by"], "dev");
        let top = git.dir("fresh");
        git.run(&top, &["clone", "-q", "-b", "main", &url, "c"])
            .await;
        let c = top.join("c");
        assert_eq!(
            std::fs::read_to_string(c.join("feature.txt")).unwrap(),
            "new\n"
        );
        let parents = git.run(&c, &["log", "-1", "--format=%P %an"]).await;
        assert_eq!(
            parents.split_whitespace().count(),
            3,
            "two parents and the author: {parents}"
        );
        assert!(parents.trim().ends_with("dev"));
        let (ok, _) = git
            .try_run(
                &c,
                &["ls-remote", "--exit-code", "origin", "refs/heads/feature"],
            )
            .await;
        assert!(!ok, "the source branch was deleted");
        // Merging again is refused: the change request is no longer open.
        let (st, b) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert_eq!(st, 409, "{b}");
        assert!(unmet(&b).contains(&"open".to_string()));
        let mut linked = false;
        for _ in 0..100 {
            let (_, links) = s
                .admin(
                    Method::GET,
                    &format!("/api/v1/projects/demo/items/{key}/links"),
                    None,
                )
                .await;
            if links.to_string().contains("change_request") {
                linked = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(linked, "the change request naming {key} is linked to it");
        // The author hears about what others did: the refused merge, the review, the merge.
        let mut kinds: Vec<String> = Vec::new();
        for _ in 0..100 {
            let (_, notes) = s.admin(Method::GET, "/api/v1/notifications", None).await;
            // (Automation may also tell the author about the linked item moving.)
            kinds = notes["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["item"] == "app!1")
                .map(|n| n["kind"].as_str().unwrap().to_string())
                .collect();
            if kinds.len() >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        kinds.sort();
        assert_eq!(kinds, vec!["cr_merge_refused", "cr_merged", "cr_reviewed"]);
        let (_, html) = s.admin_page("/notifications").await;
        assert!(
            html.contains("/projects/demo/code/app/change-requests/1"),
            "{html}"
        );
        // The ledger has the story.
        for kind in [
            "cr.opened",
            "cr.reviewed",
            "cr.merged",
            "cr.merge_refused",
            "code.status",
        ] {
            let (_, evs) = s
                .admin(
                    Method::GET,
                    &format!("/api/v1/projects/demo/events?kind={kind}"),
                    None,
                )
                .await;
            assert!(!evs["items"].as_array().unwrap().is_empty(), "{kind}");
        }
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=code.pushed",
                None,
            )
            .await;
        assert!(
            evs["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["payload"]["ref"] == "refs/heads/main"
                    && e["payload"]["new"] == merged["merge_commit"])
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn merge_methods_conflicts_and_stale_approvals() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let (git, work, _url) = setup(&s).await;
        let rules = |method: &str| {
            json!({"merge_method": method, "required_approvals": 1, "required_checks": [],
                   "dismiss_stale_approvals": true})
        };
        let open = |source: &str, n: i64| {
            let body = json!({"source": source, "target": "main", "title": format!("CR {n}")});
            (format!("{REPO}/change-requests"), body)
        };

        // Squash: one parent, the combined change.
        s.admin(
            Method::PUT,
            &format!("{REPO}/merge-rules"),
            Some(rules("squash")),
        )
        .await;
        branch(&git, &work, "sq", "main", "a.txt", "1\n").await;
        git.commit(&work, "b.txt", "2\n", "Second").await;
        git.run(&work, &["push", "-q", "origin", "sq"]).await;
        let (p, b) = open("sq", 1);
        let (st, cr) = s.admin(Method::POST, &p, Some(b)).await;
        assert_eq!(st, 201, "{cr}");
        let n = cr["number"].as_i64().unwrap();
        let one = format!("{REPO}/change-requests/{n}");
        s.call(
            Method::POST,
            &format!("{one}/reviews"),
            Some(&dev),
            Some(json!({"verdict": "approve"})),
        )
        .await;
        // A new push to the source dismisses the approval.
        git.commit(&work, "c.txt", "3\n", "Third").await;
        git.run(&work, &["push", "-q", "origin", "sq"]).await;
        let (_, view) = s.admin(Method::GET, &one, None).await;
        assert_eq!(view["reviews"][0]["dismissed"], true, "{view}");
        assert_eq!(view["gate"]["mergeable"], false);
        s.call(
            Method::POST,
            &format!("{one}/reviews"),
            Some(&dev),
            Some(json!({"verdict": "approve"})),
        )
        .await;
        let (st, merged) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert_eq!(st, 200, "{merged}");
        git.run(&work, &["fetch", "-q", "origin"]).await;
        let parents = git
            .run(&work, &["log", "-1", "--format=%P", "origin/main"])
            .await;
        assert_eq!(parents.split_whitespace().count(), 1, "{parents}");
        let files = git
            .run(&work, &["show", "--name-only", "--format=", "origin/main"])
            .await;
        assert_eq!(
            files.split_whitespace().collect::<Vec<_>>(),
            vec!["a.txt", "b.txt", "c.txt"]
        );

        // Conflicts: both sides change README.md; the condition names the path.
        branch(&git, &work, "clash", "origin/main", "README.md", "theirs\n").await;
        git.run(&work, &["checkout", "-q", "-B", "main", "origin/main"])
            .await;
        git.commit(&work, "README.md", "ours\n", "Ours").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let (p, b) = open("clash", 2);
        let (_, cr) = s.admin(Method::POST, &p, Some(b)).await;
        let one = format!("{REPO}/change-requests/{}", cr["number"]);
        s.call(
            Method::POST,
            &format!("{one}/reviews"),
            Some(&dev),
            Some(json!({"verdict": "approve"})),
        )
        .await;
        let (st, b) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert_eq!(st, 409, "{b}");
        assert_eq!(unmet(&b), vec!["conflicts"], "{b}");
        assert!(b.to_string().contains("README.md"), "{b}");
        // Close and reopen.
        let (st, c) = s.admin(Method::POST, &format!("{one}/close"), None).await;
        assert_eq!((st, c["state"].clone()), (200, json!("closed")));
        let (st, _) = s.admin(Method::POST, &format!("{one}/close"), None).await;
        assert_eq!(st, 409);
        let (st, c) = s.admin(Method::POST, &format!("{one}/reopen"), None).await;
        assert_eq!((st, c["state"].clone()), (200, json!("open")));

        // Fast-forward only: refused when main moved on, merged when it did not.
        s.admin(
            Method::PUT,
            &format!("{REPO}/merge-rules"),
            Some(rules("fast_forward")),
        )
        .await;
        let ff_head = branch(&git, &work, "ff", "origin/main", "ff.txt", "ff\n").await;
        let (p, b) = open("ff", 3);
        let (_, cr) = s.admin(Method::POST, &p, Some(b)).await;
        let one = format!("{REPO}/change-requests/{}", cr["number"]);
        s.call(
            Method::POST,
            &format!("{one}/reviews"),
            Some(&dev),
            Some(json!({"verdict": "approve"})),
        )
        .await;
        let diverged = branch(&git, &work, "main", "origin/main", "other.txt", "x\n").await;
        let (_, view) = s.admin(Method::GET, &one, None).await;
        let ff = view["gate"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "fast_forward")
            .cloned()
            .unwrap();
        assert_eq!(ff["met"], false, "{view}");
        // Rebased onto the new main, the source can fast-forward again.
        git.run(&work, &["checkout", "-q", "ff"]).await;
        git.run(&work, &["rebase", "-q", &diverged]).await;
        git.run(&work, &["push", "-q", "-f", "origin", "ff"]).await;
        s.call(
            Method::POST,
            &format!("{one}/reviews"),
            Some(&dev),
            Some(json!({"verdict": "approve"})),
        )
        .await;
        let (st, merged) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert_eq!(st, 200, "{merged}");
        let rebased = git.run(&work, &["rev-parse", "HEAD"]).await;
        assert_eq!(
            merged["merge_commit"],
            json!(rebased.trim()),
            "fast-forward moves main to the head"
        );
        assert_ne!(rebased.trim(), ff_head);

        // Unrelated histories: a clear condition, not a 500.
        git.run(&work, &["checkout", "-q", "--orphan", "island"])
            .await;
        git.run(&work, &["rm", "-rq", "--cached", "."]).await;
        git.commit(&work, "island.txt", "alone\n", "Island").await;
        git.run(&work, &["push", "-q", "origin", "island"]).await;
        s.admin(
            Method::PUT,
            &format!("{REPO}/merge-rules"),
            Some(rules("merge")),
        )
        .await;
        let (p, b) = open("island", 4);
        let (_, cr) = s.admin(Method::POST, &p, Some(b)).await;
        let one = format!("{REPO}/change-requests/{}", cr["number"]);
        let (st, b) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert_eq!(st, 409, "{b}");
        assert!(b.to_string().contains("unrelated histories"), "{b}");

        // Nothing to merge: a source already in the target is refused.
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(json!({"source": "ff", "target": "main", "title": "Again"})),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        assert!(b.to_string().contains("nothing to merge"), "{b}");

        // A merge whose ref moved but was never recorded (a crash between update-ref and the
        // database), or a change pushed straight into the target: the change request is seen
        // as merged, once, with no second merge commit.
        git.run(&work, &["fetch", "-q", "origin"]).await;
        let head = branch(&git, &work, "late", "origin/main", "late.txt", "late\n").await;
        let (_, cr) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(json!({"source": "late", "target": "main", "title": "Late"})),
            )
            .await;
        let one = format!("{REPO}/change-requests/{}", cr["number"]);
        git.run(&work, &["push", "-q", "origin", "late:main"]).await;
        let (_, view) = s.admin(Method::GET, &one, None).await;
        assert_eq!(view["state"], "merged", "{view}");
        assert_eq!(view["merge_commit"], json!(head));
        let (st, b) = s.admin(Method::POST, &format!("{one}/merge"), None).await;
        assert_eq!(st, 409, "{b}");
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.merged",
                None,
            )
            .await;
        let detected = evs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["payload"]["detected"] == true)
            .count();
        assert_eq!(detected, 1, "{evs}");

        // Lists filter by state; unknown numbers are 404.
        let (_, merged_list) = s
            .admin(
                Method::GET,
                &format!("{REPO}/change-requests?state=merged"),
                None,
            )
            .await;
        assert_eq!(merged_list.as_array().unwrap().len(), 3, "{merged_list}");
        let (st, b) = s
            .admin(Method::GET, &format!("{REPO}/change-requests/99"), None)
            .await;
        assert_eq!((st, error_code(&b)), (404, "code.cr_not_found".into()));
        s.stop().await;
    }
}

/// A push brings open CRs up to date and page views refresh too. However they race, one moved
/// head gives one `cr.updated`.
#[tokio::test]
async fn racing_refreshes_record_one_update_per_moved_head() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work, _url) = setup(&s).await;
        branch(&git, &work, "race", "main", "r.txt", "1\n").await;
        let (st, cr) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(json!({"source": "race", "target": "main", "title": "Race"})),
            )
            .await;
        assert_eq!(st, 201, "{cr}");
        let one = format!("{REPO}/change-requests/{}", cr["number"]);
        for i in 0..3 {
            let head = git
                .commit(&work, "r.txt", &format!("{i}\n"), &format!("Move {i}"))
                .await;
            git.run(&work, &["push", "-q", "origin", "race"]).await;
            let views =
                futures::future::join_all((0..4).map(|_| s.admin(Method::GET, &one, None))).await;
            for (st, v) in views {
                assert_eq!(st, 200, "{v}");
                assert_eq!(v["head"], json!(head), "{v}");
            }
        }
        // Wait for the ledger to show the three updates, then check there are no more.
        let mut updates = 0;
        for _ in 0..100 {
            let (_, ev) = s
                .admin(
                    Method::GET,
                    "/api/v1/projects/demo/events?kind=cr.updated&limit=100",
                    None,
                )
                .await;
            updates = ev["items"].as_array().map_or(0, |a| a.len());
            if updates >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (_, ev) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.updated&limit=100",
                None,
            )
            .await;
        assert_eq!(ev["items"].as_array().unwrap().len(), 3, "{ev} ({updates})");
    }
}
