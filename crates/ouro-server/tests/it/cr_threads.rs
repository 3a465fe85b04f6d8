//! Comments and threads on change requests with real git over HTTP: comments on the change
//! request and on lines of its diff, replies, edits, deletion, resolving, anchors outside the
//! diff, outdated threads after a push, the `threads` gate condition, notifications, and the
//! threads on the CR page (under their diff lines, inert user text).

use std::path::{Path, PathBuf};

use crate::code_hosting::{Git, app_with_main, member};
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPO: &str = "/api/v1/projects/demo/repos/app";
const CR: &str = "/api/v1/projects/demo/repos/app/change-requests/1";
const UI: &str = "/projects/demo/code/app/change-requests/1";

const BASE_TEXT: &str = "one\ntwo\nthree\nfour\nfive\n";

/// A repository `app` with `main` (app.txt) and `feature` changing its line 3, and change
/// request !1 opened by `dev`; returns (git, work dir, dev token, viewer token).
async fn setup(s: &TestServer) -> (Git, PathBuf, String, String) {
    s.demo_project().await;
    let dev = member(s, "dev", "developer").await;
    let viewer = member(s, "viewer", "viewer").await;
    let (git, work, _) = app_with_main(s, "app.txt", BASE_TEXT).await;
    git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
    push(&git, &work, "one\ntwo\nTHREE\nfour\nfive\n").await;
    let (st, c) = s
        .call(
            Method::POST,
            &format!("{REPO}/change-requests"),
            Some(&dev),
            Some(json!({"source": "feature", "target": "main", "title": "Shout three"})),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["number"], 1);
    (git, work, dev, viewer)
}

/// Commits app.txt on the checked-out `feature` and pushes it.
async fn push(git: &Git, work: &Path, text: &str) -> String {
    let head = git.commit(work, "app.txt", text, "Change app.txt").await;
    git.run(work, &["push", "-q", "-f", "origin", "feature"])
        .await;
    head
}

async fn comment(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    s.call(
        Method::POST,
        &format!("{CR}/comments"),
        Some(token),
        Some(body),
    )
    .await
}

async fn threads(s: &TestServer, token: &str) -> Vec<Value> {
    let (st, list) = s
        .call(Method::GET, &format!("{CR}/comments"), Some(token), None)
        .await;
    assert_eq!(st, 200, "{list}");
    list.as_array().unwrap().clone()
}

fn field(b: &Value) -> String {
    b["error"]["details"]["field"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn comments_line_threads_replies_edits_and_resolving_through_the_api() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (_git, _work, dev, viewer) = setup(&s).await;
        let admin = s.admin_token.clone();

        // A comment on the whole change request.
        let (st, general) = comment(&s, &admin, json!({"body": "Looks **good**"})).await;
        assert_eq!(st, 201, "{general}");
        assert_eq!(general["author"], "admin");
        let general_thread = general["thread_id"].as_i64().unwrap();

        // A line comment on the added line 3 (new side) of the pushed diff.
        let (st, line) = comment(
            &s,
            &admin,
            json!({"body": "Why shout?", "path": "app.txt", "side": "new", "line": 3}),
        )
        .await;
        assert_eq!(st, 201, "{line}");
        let line_thread = line["thread_id"].as_i64().unwrap();
        assert_ne!(line_thread, general_thread);
        // And one on the removed line (old side).
        let (st, old) = comment(
            &s,
            &admin,
            json!({"body": "This was fine", "path": "app.txt", "side": "old", "line": 3}),
        )
        .await;
        assert_eq!(st, 201, "{old}");

        // A reply joins the thread of the comment it answers.
        let (st, reply) = comment(
            &s,
            &dev,
            json!({"body": "Because @admin asked", "reply_to": line["id"]}),
        )
        .await;
        assert_eq!(st, 201, "{reply}");
        assert_eq!(reply["thread_id"].as_i64(), Some(line_thread));

        // Bad input: 422 with the field.
        for (body, f) in [
            (
                json!({"body": "x", "path": "app.txt", "side": "new", "line": 40}),
                "line",
            ),
            (
                json!({"body": "x", "path": "app.txt", "side": "old", "line": 1000}),
                "line",
            ),
            (json!({"body": "x", "path": "nope.txt", "line": 1}), "path"),
            (
                json!({"body": "x", "path": "app.txt", "side": "left", "line": 3}),
                "side",
            ),
            (json!({"body": "x", "path": "app.txt"}), "line"),
            (json!({"body": "   "}), "body"),
            (json!({"body": "x", "reply_to": 999_999}), "reply_to"),
            (
                json!({"body": "x", "reply_to": line["id"], "path": "app.txt", "line": 3}),
                "reply_to",
            ),
        ] {
            let (st, b) = comment(&s, &admin, body.clone()).await;
            assert_eq!((st, field(&b)), (422, f.to_string()), "{body} -> {b}");
        }
        let (st, b) = comment(&s, &admin, json!({"body": "x".repeat(70_000)})).await;
        assert_eq!((st, field(&b)), (422, "body".to_string()), "{b}");

        // Viewers read but cannot comment.
        let (st, b) = comment(&s, &viewer, json!({"body": "me too"})).await;
        assert_eq!(st, 403, "{b}");
        let list = threads(&s, &viewer).await;
        assert_eq!(list.len(), 3, "{list:?}");
        assert_eq!(list[0]["id"].as_i64(), Some(general_thread));
        assert_eq!(list[0]["anchor"], Value::Null);
        let t = &list[1];
        assert_eq!(t["id"].as_i64(), Some(line_thread));
        assert_eq!(t["anchor"]["path"], "app.txt");
        assert_eq!(t["anchor"]["side"], "new");
        assert_eq!(t["anchor"]["line"], 3);
        assert_eq!(t["outdated"], false);
        assert_eq!(t["resolved"], false);
        let bodies: Vec<&str> = t["comments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, vec!["Why shout?", "Because @admin asked"]);
        assert_eq!(list[2]["anchor"]["side"], "old");

        // Only the author edits; anyone else gets 403.
        let one = format!("{CR}/comments/{}", line["id"]);
        let (st, b) = s
            .call(
                Method::PATCH,
                &one,
                Some(&dev),
                Some(json!({"body": "hijack"})),
            )
            .await;
        assert_eq!(st, 403, "{b}");
        let (st, b) = s
            .admin(
                Method::PATCH,
                &one,
                Some(json!({"body": "Why shout? Edited"})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["body"], "Why shout? Edited");
        assert!(b["edited_at"].is_string(), "{b}");
        let (st, b) = s
            .call(
                Method::PATCH,
                &format!("{CR}/comments/999999"),
                Some(&admin),
                Some(json!({"body": "x"})),
            )
            .await;
        assert_eq!((st, error_code(&b)), (404, "code.comment_not_found".into()));

        // The author deletes their own reply; a developer cannot delete someone else's comment,
        // a maintainer (the admin) can.
        let (st, _) = s
            .call(
                Method::DELETE,
                &format!("{CR}/comments/{}", general["id"]),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(st, 403);
        let (st, _) = s
            .call(
                Method::DELETE,
                &format!("{CR}/comments/{}", reply["id"]),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(st, 204);
        let (st, _) = s
            .admin(
                Method::DELETE,
                &format!("{CR}/comments/{}", old["id"]),
                None,
            )
            .await;
        assert_eq!(st, 204);
        let list = threads(&s, &dev).await;
        assert_eq!(list.len(), 2, "the emptied thread is gone: {list:?}");
        assert_eq!(list[1]["comments"].as_array().unwrap().len(), 1);

        // Resolve and unresolve (developers may; viewers may not).
        let resolve = format!("{CR}/threads/{line_thread}/resolve");
        let (st, _) = s.call(Method::POST, &resolve, Some(&viewer), None).await;
        assert_eq!(st, 403);
        let (st, t) = s.call(Method::POST, &resolve, Some(&dev), None).await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["resolved"], true);
        assert_eq!(t["resolved_by"], "dev");
        let (st, t) = s
            .call(
                Method::POST,
                &format!("{CR}/threads/{line_thread}/unresolve"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["resolved"], false);
        assert_eq!(t["resolved_by"], Value::Null);
        let (st, b) = s
            .admin(Method::POST, &format!("{CR}/threads/999999/resolve"), None)
            .await;
        assert_eq!((st, error_code(&b)), (404, "code.thread_not_found".into()));

        // The ledger has the story.
        for kind in ["cr.commented", "cr.comment_changed", "cr.thread_resolved"] {
            let (_, evs) = s
                .admin(
                    Method::GET,
                    &format!("/api/v1/projects/demo/events?kind={kind}"),
                    None,
                )
                .await;
            assert!(
                !evs["items"].as_array().unwrap().is_empty(),
                "{kind}: {evs}"
            );
        }
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.commented",
                None,
            )
            .await;
        let anchored = evs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["payload"]["comment_id"] == line["id"])
            .expect("the line comment's event");
        assert_eq!(anchored["payload"]["anchor"]["path"], "app.txt");
        assert_eq!(anchored["payload"]["anchor"]["line"], 3);
        assert_eq!(anchored["payload"]["thread_id"].as_i64(), Some(line_thread));

        // The change request's author hears about comments by others; the admin, mentioned in
        // dev's reply, hears about that.
        let mut dev_kinds = Vec::new();
        let mut admin_kinds = Vec::new();
        for _ in 0..100 {
            let (_, notes) = s
                .call(Method::GET, "/api/v1/notifications", Some(&dev), None)
                .await;
            dev_kinds = kinds_for(&notes);
            let (_, notes) = s.admin(Method::GET, "/api/v1/notifications", None).await;
            admin_kinds = kinds_for(&notes);
            if dev_kinds.len() >= 3 && !admin_kinds.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            dev_kinds,
            vec!["cr_commented", "cr_commented", "cr_commented"]
        );
        assert_eq!(admin_kinds, vec!["mentioned"]);
        s.stop().await;
    }
}

fn kinds_for(notes: &Value) -> Vec<String> {
    let mut k: Vec<String> = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["item"] == "app!1")
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn the_threads_gate_condition_blocks_the_merge_until_every_thread_is_resolved() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (_git, _work, dev, _viewer) = setup(&s).await;
        let (st, rules) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules"),
                Some(json!({"merge_method": "merge", "required_approvals": 0,
                            "require_resolved_threads": true})),
            )
            .await;
        assert_eq!(st, 200, "{rules}");
        assert_eq!(rules["require_resolved_threads"], true);
        let (_, rules) = s
            .admin(Method::GET, &format!("{REPO}/merge-rules"), None)
            .await;
        assert_eq!(rules["require_resolved_threads"], true, "{rules}");

        let (_, view) = s.admin(Method::GET, CR, None).await;
        let cond = |v: &Value| {
            v["gate"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == "threads")
                .cloned()
        };
        assert_eq!(cond(&view).unwrap()["met"], true, "{view}");

        let (st, a) = comment(&s, &s.admin_token.clone(), json!({"body": "One thing"})).await;
        assert_eq!(st, 201);
        let (st, b) = comment(
            &s,
            &dev,
            json!({"body": "And here", "path": "app.txt", "line": 3}),
        )
        .await;
        assert_eq!(st, 201, "{b}");
        let (_, view) = s.admin(Method::GET, CR, None).await;
        let c = cond(&view).unwrap();
        assert_eq!(c["met"], false);
        assert_eq!(c["message"], "2 unresolved threads");

        let (st, body) = s
            .call(Method::POST, &format!("{CR}/merge"), Some(&dev), None)
            .await;
        assert_eq!((st, error_code(&body)), (409, "code.merge_blocked".into()));
        let unmet: Vec<&str> = body["error"]["details"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(unmet, vec!["threads"], "{body}");

        for t in [&a, &b] {
            let (st, _) = s
                .call(
                    Method::POST,
                    &format!("{CR}/threads/{}/resolve", t["thread_id"]),
                    Some(&dev),
                    None,
                )
                .await;
            assert_eq!(st, 200);
        }
        let (st, merged) = s
            .call(Method::POST, &format!("{CR}/merge"), Some(&dev), None)
            .await;
        assert_eq!(st, 200, "{merged}");
        assert_eq!(merged["state"], "merged");

        // Without the rule there is no `threads` condition at all.
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules"),
                Some(json!({"merge_method": "merge", "required_approvals": 0})),
            )
            .await;
        assert_eq!(st, 200);
        let (_, view) = s.admin(Method::GET, CR, None).await;
        assert!(cond(&view).is_none(), "{view}");
        s.stop().await;
    }
}

#[tokio::test]
async fn a_thread_whose_line_changes_in_a_later_push_is_outdated_and_kept() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (git, work, dev, _viewer) = setup(&s).await;
        let (st, on3) = comment(
            &s,
            &dev,
            json!({"body": "line three", "path": "app.txt", "line": 3}),
        )
        .await;
        assert_eq!(st, 201, "{on3}");
        let (st, on1) = comment(
            &s,
            &dev,
            json!({"body": "line one", "path": "app.txt", "line": 1}),
        )
        .await;
        assert_eq!(st, 201, "{on1}");
        // Line 3 changes again; line 1 does not.
        push(&git, &work, "one\ntwo\nThree!\nfour\nfive\n").await;
        let list = threads(&s, &dev).await;
        assert_eq!(list.len(), 2, "{list:?}");
        let by_id = |id: &Value| list.iter().find(|t| &t["id"] == id).unwrap().clone();
        assert_eq!(by_id(&on3["thread_id"])["outdated"], true);
        assert_eq!(by_id(&on1["thread_id"])["outdated"], false);
        // The change request's own JSON embeds the same threads.
        let (st, one) = s.call(Method::GET, CR, Some(&dev), None).await;
        assert_eq!(st, 200, "{one}");
        assert_eq!(one["threads"], Value::Array(list.clone()), "{one}");

        // The page keeps the outdated thread in the comments, not under a diff line.
        let r = s.req(Method::GET, UI, Some(&dev)).send().await.unwrap();
        let html = r.text().await.unwrap();
        let changes = &html[html.find("id=\"changes\"").unwrap()..];
        let diff_part = &changes[..changes.find("</section>").unwrap()];
        assert!(diff_part.contains(&format!("id=\"thread-{}\"", on1["thread_id"])));
        assert!(!diff_part.contains(&format!("id=\"thread-{}\"", on3["thread_id"])));
        assert!(html.contains("outdated"), "{html}");
        s.stop().await;
    }
}

async fn page(s: &TestServer, token: &str, path: &str) -> (u16, String) {
    let r = s.req(Method::GET, path, Some(token)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Posts a form (bearer tokens need no CSRF field): status, Location and body.
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

#[tokio::test]
async fn the_cr_page_shows_threads_under_their_diff_lines_and_the_forms_work() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (_git, _work, dev, viewer) = setup(&s).await;
        let admin = s.admin_token.clone();
        // A line comment with hostile text.
        let (st, c) = comment(
            &s,
            &admin,
            json!({"body": "<script>alert(1)</script> <img src=x onerror=alert(2)>\n\nSome **bold**",
                   "path": "app.txt", "side": "new", "line": 3}),
        )
        .await;
        assert_eq!(st, 201, "{c}");
        let tid = c["thread_id"].as_i64().unwrap();

        let (st, html) = page(&s, &dev, UI).await;
        assert_eq!(st, 200);
        // The thread sits in the diff right after the added line 3.
        let changes = &html[html.find("id=\"changes\"").unwrap()..];
        let diff_part = &changes[..changes.find("</section>").unwrap()];
        let at = diff_part
            .find(&format!("id=\"thread-{tid}\""))
            .expect("the thread is under its line");
        let line3 = diff_part.find("THREE").expect("the added line");
        assert!(line3 < at, "the thread follows its line");
        assert!(!diff_part[line3..at].contains("four"), "directly under it");
        // Inert: no script or event handler gets through; Markdown renders.
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        // Per-line "+" links for developers, to the no-script form page.
        let plus = format!("{UI}/comments/new?path=app.txt&#38;side=new&#38;line=3");
        assert!(html.contains(&plus), "{html}");
        assert!(html.contains("id=\"comment-form\""));
        assert!(html.contains(&format!("id=\"resolve-{tid}\"")));

        // The form page for a line shows the line and the form.
        let (st, new) = page(
            &s,
            &dev,
            &format!("{UI}/comments/new?path=app.txt&side=new&line=3"),
        )
        .await;
        assert_eq!(st, 200);
        assert!(new.contains("id=\"line-comment-form\""), "{new}");
        assert!(new.contains("id=\"comment-line\""), "{new}");
        let (_, missing) = page(
            &s,
            &dev,
            &format!("{UI}/comments/new?path=app.txt&side=new&line=99"),
        )
        .await;
        assert!(missing.contains("id=\"comment-line-missing\""), "{missing}");

        // Posting it starts a thread; a line outside the diff re-renders the page with 422.
        let (st, loc, _) = form(
            &s,
            &dev,
            &format!("{UI}/comments"),
            &[
                ("body", "Old line note"),
                ("path", "app.txt"),
                ("side", "old"),
                ("line", "3"),
            ],
        )
        .await;
        assert_eq!((st, loc.as_str()), (303, UI), "redirected back");
        let (st, _, body) = form(
            &s,
            &dev,
            &format!("{UI}/comments"),
            &[
                ("body", "x"),
                ("path", "app.txt"),
                ("side", "new"),
                ("line", "99"),
            ],
        )
        .await;
        assert_eq!(st, 422);
        assert!(body.contains("id=\"action-error\""), "{body}");
        // A comment on the change request, a reply, then resolve through the forms.
        let (st, _, _) = form(
            &s,
            &dev,
            &format!("{UI}/comments"),
            &[("body", "General note")],
        )
        .await;
        assert_eq!(st, 303);
        let (st, _, _) = form(
            &s,
            &dev,
            &format!("{UI}/comments"),
            &[("body", "Fair point"), ("reply_to", &c["id"].to_string())],
        )
        .await;
        assert_eq!(st, 303);
        let (st, _, _) = form(&s, &dev, &format!("{UI}/threads/{tid}/resolve"), &[]).await;
        assert_eq!(st, 303);
        // Editing goes through the author only.
        let general = threads(&s, &dev)
            .await
            .into_iter()
            .find(|t| t["anchor"].is_null())
            .unwrap();
        let gid = general["comments"][0]["id"].as_i64().unwrap();
        let (st, _, _) = form(
            &s,
            &dev,
            &format!("{UI}/comments/{gid}/edit"),
            &[("body", "General note, edited")],
        )
        .await;
        assert_eq!(st, 303);
        let (st, _, _) = form(
            &s,
            &admin,
            &format!("{UI}/comments/{gid}/edit"),
            &[("body", "not yours")],
        )
        .await;
        assert_eq!(st, 403);
        let list = threads(&s, &dev).await;
        assert_eq!(list.len(), 3, "{list:?}");
        let t = list.iter().find(|t| t["id"] == tid).unwrap();
        assert_eq!(t["resolved"], true);
        assert_eq!(t["comments"].as_array().unwrap().len(), 2);
        let (_, html) = page(&s, &dev, UI).await;
        assert!(html.contains("General note, edited") && html.contains("Fair point"));
        assert!(!html.contains("not yours"));
        assert!(html.contains(&format!("id=\"unresolve-{tid}\"")));

        // Viewers see the threads but no forms and no "+" links; they cannot post.
        let (st, html) = page(&s, &viewer, UI).await;
        assert_eq!(st, 200);
        assert!(html.contains(&format!("id=\"thread-{tid}\"")));
        assert!(!html.contains("id=\"comment-form\""));
        assert!(!html.contains("diff-comment-add"));
        let (st, _, _) = form(&s, &viewer, &format!("{UI}/comments"), &[("body", "hi")]).await;
        assert_eq!(st, 403);
        let (st, _) = page(
            &s,
            &viewer,
            &format!("{UI}/comments/new?path=app.txt&line=3"),
        )
        .await;
        assert_eq!(st, 403);
        s.stop().await;
    }
}
