//! The change request pages over HTTP with bearer tokens (UI routes accept them without a CSRF
//! field): the list, the form that opens one, the page with its gate, reviews and merge
//! controls, close and reopen, the merge rules page; viewers get no forms; user text is inert.

use std::path::{Path, PathBuf};

use crate::code_hosting::{Git, app_with_main, member};
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPO: &str = "/api/v1/projects/demo/repos/app";
const UI: &str = "/projects/demo/code/app";

/// A repository `app` with `main` and a pushed branch `feature`; returns (git, work dir).
async fn setup(s: &TestServer) -> (Git, PathBuf) {
    let (git, work, _) = app_with_main(s, "README.md", "hello\n").await;
    push_branch(&git, &work, "feature", "feature.txt", "new\n").await;
    (git, work)
}

async fn push_branch(git: &Git, work: &Path, name: &str, file: &str, content: &str) -> String {
    git.run(work, &["checkout", "-q", "-B", name, "main"]).await;
    let head = git
        .commit(work, file, content, &format!("Change on {name}"))
        .await;
    git.run(work, &["push", "-q", "-f", "origin", name]).await;
    head
}

async fn page(s: &TestServer, token: &str, path: &str) -> (u16, String) {
    let r = s.req(Method::GET, path, Some(token)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Posts a form: status, Location and body.
async fn form(
    s: &TestServer,
    token: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, String) {
    let r = s
        .req(Method::POST, path, Some(token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(fields))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, location, r.text().await.unwrap())
}

async fn open_api(s: &TestServer, token: &str, body: Value) -> i64 {
    let (st, c) = s
        .call(
            Method::POST,
            &format!("{REPO}/change-requests"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    c["number"].as_i64().unwrap()
}

async fn api_cr(s: &TestServer, number: i64) -> Value {
    let (st, c) = s
        .admin(
            Method::GET,
            &format!("{REPO}/change-requests/{number}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{c}");
    c
}

#[tokio::test]
async fn pages_render_for_developers_and_viewers_see_no_forms() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let viewer = member(&s, "viewer", "viewer").await;
        setup(&s).await;
        let n = open_api(
            &s,
            &dev,
            json!({"source": "feature", "target": "main", "title": "Add the feature"}),
        )
        .await;
        assert_eq!(n, 1);

        // The repository list links to the change requests.
        let (st, body) = page(&s, &viewer, "/projects/demo/code").await;
        assert_eq!(st, 200);
        assert!(body.contains(&format!("{UI}/change-requests\"")), "{body}");

        // The list, for a developer: the row and the "New" link.
        let (st, body) = page(&s, &dev, &format!("{UI}/change-requests")).await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("data-cr=\"1\""), "{body}");
        assert!(body.contains("Add the feature"));
        assert!(body.contains("id=\"new-cr\""));
        // A viewer sees the list but not the link.
        let (st, body) = page(&s, &viewer, &format!("{UI}/change-requests")).await;
        assert_eq!(st, 200);
        assert!(body.contains("data-cr=\"1\""));
        assert!(!body.contains("id=\"new-cr\""), "{body}");
        // The state filter: nothing merged yet.
        let (_, body) = page(&s, &viewer, &format!("{UI}/change-requests?state=merged")).await;
        assert!(!body.contains("data-cr=\"1\""));
        assert!(body.contains("id=\"no-crs\""));

        // The change request's page: developers get the review form and the merge controls.
        let (st, body) = page(&s, &dev, &format!("{UI}/change-requests/1")).await;
        assert_eq!(st, 200, "{body}");
        for id in [
            "review-form",
            "merge-form",
            "close-form",
            "data-condition=\"approvals\"",
        ] {
            assert!(body.contains(id), "{id} missing: {body}");
        }
        assert!(
            body.contains("Change on feature"),
            "the commit is listed: {body}"
        );
        // The change itself, rendered by the diff renderer, with the split view one click away.
        assert!(body.contains("id=\"changes\""), "{body}");
        assert!(body.contains("feature.txt"), "{body}");
        assert!(body.contains("view=split"), "{body}");
        let (st, split) = page(&s, &dev, &format!("{UI}/change-requests/1?view=split")).await;
        assert_eq!(st, 200);
        assert!(split.contains("feature.txt"));
        let (st, body) = page(&s, &viewer, &format!("{UI}/change-requests/1")).await;
        assert_eq!(st, 200);
        assert!(body.contains("data-condition=\"approvals\""), "{body}");
        for id in ["review-form", "merge-form", "close-form", "reopen-form"] {
            assert!(!body.contains(id), "a viewer sees {id}");
        }
        // Viewers cannot open the form or post to the actions.
        let (st, _) = page(&s, &viewer, &format!("{UI}/change-requests/new")).await;
        assert_eq!(st, 403);
        let (st, _, _) = form(
            &s,
            &viewer,
            &format!("{UI}/change-requests/1/reviews"),
            &[("verdict", "approve")],
        )
        .await;
        assert_eq!(st, 403);
        let (st, _, _) = form(&s, &viewer, &format!("{UI}/change-requests/1/close"), &[]).await;
        assert_eq!(st, 403);
        assert_eq!(api_cr(&s, 1).await["state"], "open");
        // Merge rules: viewers read, developers cannot save.
        let (st, body) = page(&s, &viewer, &format!("{UI}/settings/merge")).await;
        assert_eq!(st, 200);
        assert!(!body.contains("merge-rules-form"));
        assert!(body.contains("id=\"merge-rules\""));
        let (st, _, _) = form(
            &s,
            &dev,
            &format!("{UI}/settings/merge"),
            &[("merge_method", "squash"), ("required_approvals", "0")],
        )
        .await;
        assert_eq!(st, 403);
        // An unknown change request is a 404 page.
        let (st, _) = page(&s, &dev, &format!("{UI}/change-requests/99")).await;
        assert_eq!(st, 404);
        s.stop().await;
    }
}

#[tokio::test]
async fn a_change_request_is_opened_reviewed_blocked_and_merged_through_the_forms() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let reviewer = member(&s, "reviewer", "developer").await;
        let (git, work) = setup(&s).await;
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules"),
                Some(json!({"merge_method": "merge", "required_approvals": 1,
                            "required_checks": ["ci"], "dismiss_stale_approvals": true})),
            )
            .await;
        assert_eq!(st, 200);

        // The form offers the branches, the target defaulting to the default branch.
        let (st, body) = page(&s, &dev, &format!("{UI}/change-requests/new")).await;
        assert_eq!(st, 200, "{body}");
        assert!(
            body.contains("<option value=\"main\" selected>main</option>"),
            "{body}"
        );
        assert!(body.contains("<option value=\"feature\" selected>feature</option>"));

        // A refused form comes back with the message and the input kept.
        let (st, _, body) = form(
            &s,
            &dev,
            &format!("{UI}/change-requests"),
            &[
                ("source", "feature"),
                ("target", "feature"),
                ("title", "Add it"),
                ("description", "Keep this text"),
            ],
        )
        .await;
        assert_eq!(st, 422, "{body}");
        assert!(
            body.contains("the target must differ from the source"),
            "{body}"
        );
        assert!(body.contains("Keep this text"));
        assert!(body.contains("value=\"Add it\""));
        let (st, _, body) = form(
            &s,
            &dev,
            &format!("{UI}/change-requests"),
            &[("source", "feature"), ("target", "main"), ("title", "  ")],
        )
        .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("title must be 1 to 200"), "{body}");
        let (st, list) = s
            .admin(Method::GET, &format!("{REPO}/change-requests"), None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(list.as_array().unwrap().len(), 0, "nothing was opened");

        // Opened through the form.
        let (st, loc, _) = form(
            &s,
            &dev,
            &format!("{UI}/change-requests"),
            &[
                ("source", "feature"),
                ("target", "main"),
                ("title", "Add the feature"),
                ("description", "It **matters**."),
            ],
        )
        .await;
        assert_eq!(st, 303);
        assert_eq!(loc, format!("{UI}/change-requests/1"));
        let c = api_cr(&s, 1).await;
        assert_eq!(c["author"], "dev");
        assert_eq!(c["description"], "It **matters**.");
        assert_eq!(c["draft"], false);
        let head = c["head"].as_str().unwrap().to_string();

        // Blocked: the button is disabled and the reasons are listed.
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests/1")).await;
        assert!(
            body.contains("<strong>matters</strong>"),
            "Markdown: {body}"
        );
        assert!(body.contains("id=\"merge\" disabled"), "{body}");
        assert!(body.contains("id=\"merge-blocked\""));
        assert!(body.contains("id=\"gate-summary\">blocked"));
        // Posting the merge anyway is refused with the unmet conditions, and nothing moves.
        let (st, _, body) = form(&s, &dev, &format!("{UI}/change-requests/1/merge"), &[]).await;
        assert_eq!(st, 409, "{body}");
        assert!(body.contains("id=\"refused\""), "{body}");
        assert!(body.contains("ci"), "the missing check is named: {body}");
        assert_eq!(api_cr(&s, 1).await["state"], "open");

        // The author cannot approve their own change request.
        let (st, _, body) = form(
            &s,
            &dev,
            &format!("{UI}/change-requests/1/reviews"),
            &[("verdict", "approve")],
        )
        .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("you cannot approve it"), "{body}");

        // A status (through the API) and an approval by another member (through the form).
        let (st, b) = s
            .call(
                Method::POST,
                &format!("{REPO}/commits/{head}/statuses"),
                Some(&dev),
                Some(json!({"name": "ci", "state": "success", "description": "all green"})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let (st, loc, _) = form(
            &s,
            &reviewer,
            &format!("{UI}/change-requests/1/reviews"),
            &[("verdict", "approve"), ("body", "Looks good")],
        )
        .await;
        assert_eq!(st, 303);
        assert_eq!(loc, format!("{UI}/change-requests/1"));
        let c = api_cr(&s, 1).await;
        assert_eq!(c["reviews"][0]["reviewer"], "reviewer");
        assert_eq!(c["reviews"][0]["verdict"], "approve");
        assert_eq!(c["gate"]["mergeable"], true, "{c}");

        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests/1")).await;
        assert!(body.contains("data-status=\"ci\""), "{body}");
        assert!(body.contains("all green"));
        assert!(body.contains("Looks good"));
        assert!(!body.contains("id=\"merge\" disabled"), "{body}");
        assert!(body.contains("id=\"gate-summary\">ready to merge"));

        // Merged through the form, deleting the source branch.
        let (st, loc, body) = form(
            &s,
            &dev,
            &format!("{UI}/change-requests/1/merge"),
            &[("delete_source", "1")],
        )
        .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(loc, format!("{UI}/change-requests/1"));
        let c = api_cr(&s, 1).await;
        assert_eq!(c["state"], "merged");
        assert_eq!(c["merged_by"], "dev");
        let remote = git.run(&work, &["ls-remote", "origin"]).await;
        assert!(!remote.contains("refs/heads/feature"), "{remote}");
        let merge_commit = c["merge_commit"].as_str().unwrap();
        assert!(
            remote.contains(&format!("{merge_commit}\trefs/heads/main")),
            "{remote}"
        );
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests/1")).await;
        assert!(body.contains("id=\"merged-note\""), "{body}");
        assert!(!body.contains("id=\"merge-form\""));
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests?state=merged")).await;
        assert!(body.contains("data-cr=\"1\""));
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests")).await;
        assert!(!body.contains("data-cr=\"1\""), "open only by default");
        s.stop().await;
    }
}

#[tokio::test]
async fn close_and_reopen_through_the_forms() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        setup(&s).await;
        // A draft opened through the form.
        let (st, _, _) = form(
            &s,
            &dev,
            &format!("{UI}/change-requests"),
            &[
                ("source", "feature"),
                ("target", "main"),
                ("title", "Not yet"),
                ("draft", "1"),
            ],
        )
        .await;
        assert_eq!(st, 303);
        let c = api_cr(&s, 1).await;
        assert_eq!(c["draft"], true);
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests/1")).await;
        assert!(body.contains("id=\"cr-draft\""));
        assert!(body.contains("data-condition=\"draft\""));

        let (st, loc, _) = form(&s, &dev, &format!("{UI}/change-requests/1/close"), &[]).await;
        assert_eq!(st, 303);
        assert_eq!(loc, format!("{UI}/change-requests/1"));
        assert_eq!(api_cr(&s, 1).await["state"], "closed");
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests/1")).await;
        assert!(body.contains("id=\"reopen-form\""));
        assert!(!body.contains("id=\"review-form\""));
        // Closing twice is refused on the page, not a server error.
        let (st, _, body) = form(&s, &dev, &format!("{UI}/change-requests/1/close"), &[]).await;
        assert_eq!(st, 409, "{body}");
        assert!(body.contains("id=\"action-error\""));
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests?state=closed")).await;
        assert!(body.contains("data-cr=\"1\""));

        let (st, _, _) = form(&s, &dev, &format!("{UI}/change-requests/1/reopen"), &[]).await;
        assert_eq!(st, 303);
        assert_eq!(api_cr(&s, 1).await["state"], "open");
        s.stop().await;
    }
}

#[tokio::test]
async fn the_merge_rules_page_saves() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let maintainer = member(&s, "keeper", "maintainer").await;
        setup(&s).await;
        let (st, body) = page(&s, &maintainer, &format!("{UI}/settings/merge")).await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("id=\"merge-rules-form\""));

        let (st, loc, body) = form(
            &s,
            &maintainer,
            &format!("{UI}/settings/merge"),
            &[
                ("merge_method", "squash"),
                ("required_approvals", "2"),
                ("required_checks", "ci/build, ci/test ,"),
            ],
        )
        .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(loc, format!("{UI}/settings/merge"));
        let (_, rules) = s
            .admin(Method::GET, &format!("{REPO}/merge-rules"), None)
            .await;
        assert_eq!(
            rules,
            json!({"merge_method": "squash", "required_approvals": 2,
                   "required_checks": ["ci/build", "ci/test"], "dismiss_stale_approvals": false,
                   "require_resolved_threads": false})
        );
        let (_, body) = page(&s, &maintainer, &format!("{UI}/settings/merge")).await;
        assert!(body.contains("value=\"ci/build, ci/test\""), "{body}");

        // Bad input re-renders with the message and the input; nothing changes.
        let (st, _, body) = form(
            &s,
            &maintainer,
            &format!("{UI}/settings/merge"),
            &[
                ("merge_method", "fast_forward"),
                ("required_approvals", "many"),
                ("dismiss_stale_approvals", "1"),
            ],
        )
        .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("id=\"form-error\""));
        assert!(body.contains("value=\"many\""));
        let (st, _, _) = form(
            &s,
            &maintainer,
            &format!("{UI}/settings/merge"),
            &[("merge_method", "merge"), ("required_approvals", "21")],
        )
        .await;
        assert_eq!(st, 422);
        let (_, after) = s
            .admin(Method::GET, &format!("{REPO}/merge-rules"), None)
            .await;
        assert_eq!(after, rules);
        s.stop().await;
    }
}

#[tokio::test]
async fn user_text_is_inert_on_the_pages() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let reviewer = member(&s, "reviewer", "developer").await;
        setup(&s).await;
        let n = open_api(
            &s,
            &dev,
            json!({"source": "feature", "target": "main",
                   "title": "<script>alert('t')</script>",
                   "description": "<img src=x onerror=alert(1)> [click](javascript:alert(2)) <script>alert(3)</script>"}),
        )
        .await;
        let c = api_cr(&s, n).await;
        let head = c["head"].as_str().unwrap();
        let (st, _) = s
            .call(
                Method::POST,
                &format!("{REPO}/commits/{head}/statuses"),
                Some(&dev),
                Some(json!({"name": "ci", "state": "failure",
                            "description": "<script>x()</script><b>bold</b>"})),
            )
            .await;
        assert_eq!(st, 201);
        let (st, _, _) = form(
            &s,
            &reviewer,
            &format!("{UI}/change-requests/{n}/reviews"),
            &[
                ("verdict", "request_changes"),
                ("body", "<iframe src=//evil></iframe>"),
            ],
        )
        .await;
        assert_eq!(st, 303);
        for path in [
            format!("{UI}/change-requests/{n}"),
            format!("{UI}/change-requests"),
        ] {
            let (st, body) = page(&s, &dev, &path).await;
            assert_eq!(st, 200);
            assert!(!body.contains("<script>alert"), "{path}: {body}");
            assert!(!body.contains("<script>x()"), "{path}");
            // (The edit form's textarea holds the description escaped, as text: inert.)
            assert!(!body.contains("<img src=x onerror"), "{path}: {body}");
            assert!(!body.contains(" onerror=\""), "{path}: {body}");
            assert!(!body.contains("href=\"javascript:"), "{path}: {body}");
            assert!(!body.contains("<iframe"), "{path}");
            assert!(!body.contains("<b>bold</b>"), "{path}");
        }
        let (_, body) = page(&s, &dev, &format!("{UI}/change-requests/{n}")).await;
        assert!(
            body.contains("&#60;script&#62;alert("),
            "the title is shown escaped: {body}"
        );
        s.stop().await;
    }
}
