//! Change request labels, requested reviewers, editing and draft/ready, through the API and the
//! forms, on both databases.

use std::path::{Path, PathBuf};

use crate::code_hosting::{Git, app_with_main, member};
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPO: &str = "/api/v1/projects/demo/repos/app";
const CRS: &str = "/api/v1/projects/demo/repos/app/change-requests";

/// A repository `app` with `main` and two pushed branches `feature` and `other`.
async fn setup(s: &TestServer) -> (Git, PathBuf) {
    let (git, work, _) = app_with_main(s, "README.md", "hello\n").await;
    for b in ["feature", "other"] {
        branch(&git, &work, b).await;
    }
    (git, work)
}

async fn branch(git: &Git, work: &Path, name: &str) {
    git.run(work, &["checkout", "-q", "-B", name, "main"]).await;
    git.commit(work, &format!("{name}.txt"), "x\n", &format!("On {name}"))
        .await;
    git.run(work, &["push", "-q", "-f", "origin", name]).await;
}

fn names(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_i64().unwrap())
        .collect()
}

async fn condition(s: &TestServer, number: i64, id: &str) -> bool {
    let (st, v) = s.admin(Method::GET, &format!("{CRS}/{number}"), None).await;
    assert_eq!(st, 200, "{v}");
    v["gate"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} condition: {v}"))["met"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn labels_edits_versions_and_filters() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        setup(&s).await;

        // Labels at creation: trimmed, sorted, deduplicated.
        let (st, one) = s
            .admin(
                Method::POST,
                CRS,
                Some(
                    json!({"source": "feature", "target": "main", "title": "One",
                            "labels": [" ui", "bug", "ui"]}),
                ),
            )
            .await;
        assert_eq!(st, 201, "{one}");
        assert_eq!(one["labels"], json!(["bug", "ui"]));
        assert_eq!(one["reviewers"], json!([]));
        let (st, two) = s
            .call(
                Method::POST,
                CRS,
                Some(&dev),
                Some(json!({"source": "other", "target": "main", "title": "Two", "draft": true})),
            )
            .await;
        assert_eq!(st, 201, "{two}");
        assert_eq!(two["labels"], json!([]));
        // Bad labels are refused with the field.
        for bad in [json!([""]), json!(["x".repeat(51)]), json!(["a\u{1}b"])] {
            let (st, b) = s
                .admin(
                    Method::PATCH,
                    &format!("{CRS}/1"),
                    Some(json!({"labels": bad})),
                )
                .await;
            assert_eq!(st, 422, "{b}");
            assert_eq!(b["error"]["details"]["field"], "labels", "{b}");
        }

        // Filters: label, author, draft, state; unknown label matches nothing.
        for (query, want) in [
            ("?label=bug", vec![1]),
            ("?label=nope", vec![]),
            ("?author=dev", vec![2]),
            ("?author=admin", vec![1]),
            ("?draft=true", vec![2]),
            ("?draft=false", vec![1]),
            ("?state=open&label=ui&draft=false", vec![1]),
            ("", vec![2, 1]),
        ] {
            let (st, list) = s.admin(Method::GET, &format!("{CRS}{query}"), None).await;
            assert_eq!(st, 200, "{list}");
            assert_eq!(names(&list), want, "{query}: {list}");
        }
        let (st, b) = s
            .admin(Method::GET, &format!("{CRS}?draft=maybe"), None)
            .await;
        assert_eq!(st, 422, "{b}");

        // One label at a time.
        let (st, c) = s
            .admin(Method::POST, &format!("{CRS}/2/labels/area%2Fapi"), None)
            .await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(c["labels"], json!(["area/api"]));
        let (st, c) = s
            .admin(Method::DELETE, &format!("{CRS}/2/labels/area%2Fapi"), None)
            .await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(c["labels"], json!([]));
        let (st, c) = s
            .call(
                Method::POST,
                &format!("{CRS}/1/labels/x"),
                Some(&member(&s, "watcher", "viewer").await),
                None,
            )
            .await;
        assert_eq!(st, 403, "{c}");

        // Editing: the version must be the current one.
        let (st, item) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/items",
                Some(json!({"type": "story", "title": "Linked by an edit"})),
            )
            .await;
        assert_eq!(st, 201, "{item}");
        let key = item["key"].as_str().unwrap().to_string();
        let (_, cur) = s.admin(Method::GET, &format!("{CRS}/1"), None).await;
        let version = cur["version"].as_i64().unwrap();
        let (st, b) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"title": "Stale", "version": version - 1})),
            )
            .await;
        assert_eq!(st, 409, "{b}");
        assert_eq!(error_code(&b), "conflict.stale_version");
        assert_eq!(b["error"]["details"]["current_version"], version);
        let (st, b) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"title": "  "})),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        assert_eq!(b["error"]["details"]["field"], "title");
        let (st, b) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"colour": "red"})),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        let (st, c) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(
                    json!({"title": "One, renamed", "description": format!("Now implements {key}."),
                            "labels": ["ui"], "version": version}),
                ),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(c["title"], "One, renamed");
        assert_eq!(c["labels"], json!(["ui"]));
        assert_eq!(c["version"], version + 1);
        assert_eq!(c["source"], "feature", "other fields are kept");
        let (st, b) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"title": "Again", "version": version})),
            )
            .await;
        assert_eq!(st, 409, "the old version is stale now: {b}");
        let (st, b) = s
            .admin(Method::PATCH, &format!("{CRS}/99"), Some(json!({})))
            .await;
        assert_eq!(st, 404, "{b}");

        // The edit is in the ledger with the new text, and the item named in it gets linked.
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.updated",
                None,
            )
            .await;
        let ev = evs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["payload"]["title"] == "One, renamed")
            .unwrap_or_else(|| panic!("no cr.updated with the new title: {evs}"))
            .clone();
        assert_eq!(
            ev["payload"]["description"],
            format!("Now implements {key}.")
        );
        assert_eq!(ev["payload"]["labels"], json!(["ui"]));
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
        assert!(linked, "the item named in the edited description is linked");
        s.stop().await;
    }
}

#[tokio::test]
async fn reviewers_are_validated_notified_and_show_their_state() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let rev = member(&s, "rev", "maintainer").await;
        member(&s, "watcher", "viewer").await;
        s.user("stranger").await;
        setup(&s).await;
        let (st, c) = s
            .call(
                Method::POST,
                CRS,
                Some(&dev),
                Some(
                    json!({"source": "feature", "target": "main", "title": "Review me",
                            "reviewers": ["rev"]}),
                ),
            )
            .await;
        assert_eq!(st, 201, "{c}");
        assert_eq!(c["reviewers"], json!([{"user": "rev", "state": "pending"}]));
        // Who cannot be asked: a non-member, a viewer, someone unknown, the author.
        for who in ["stranger", "watcher", "nobody", "dev"] {
            let (st, b) = s
                .admin(
                    Method::PATCH,
                    &format!("{CRS}/1"),
                    Some(json!({"reviewers": ["rev", who]})),
                )
                .await;
            assert_eq!(st, 422, "{who}: {b}");
            assert_eq!(b["error"]["details"]["field"], "reviewers", "{b}");
        }
        let (st, b) = s
            .call(
                Method::POST,
                CRS,
                Some(&dev),
                Some(json!({"source": "other", "target": "main", "title": "Self",
                            "reviewers": ["dev"]})),
            )
            .await;
        assert_eq!(st, 422, "the author cannot review their own: {b}");
        let (_, list) = s.admin(Method::GET, CRS, None).await;
        assert_eq!(
            names(&list),
            vec![1],
            "nothing was opened by the refused request"
        );

        // The requested reviewer hears about it.
        let mut kinds = Vec::new();
        for _ in 0..100 {
            let (_, notes) = s
                .call(Method::GET, "/api/v1/notifications", Some(&rev), None)
                .await;
            kinds = notes["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["item"] == "app!1")
                .map(|n| n["kind"].as_str().unwrap().to_string())
                .collect::<Vec<_>>();
            if !kinds.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(kinds, vec!["cr_review_requested"]);

        // Their state follows their latest review.
        let (st, b) = s
            .call(
                Method::POST,
                &format!("{CRS}/1/reviews"),
                Some(&rev),
                Some(json!({"verdict": "request_changes"})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let (_, c) = s.admin(Method::GET, &format!("{CRS}/1"), None).await;
        assert_eq!(
            c["reviewers"],
            json!([{"user": "rev", "state": "changes_requested"}])
        );
        s.call(
            Method::POST,
            &format!("{CRS}/1/reviews"),
            Some(&rev),
            Some(json!({"verdict": "approve"})),
        )
        .await;
        // Adding the admin as a second reviewer keeps rev (a full set) and notifies only the admin.
        let (st, c) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"reviewers": ["rev", "admin"]})),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(
            c["reviewers"],
            json!([{"user": "admin", "state": "pending"}, {"user": "rev", "state": "approved"}])
        );
        let (_, list) = s
            .admin(Method::GET, &format!("{CRS}?reviewer=rev"), None)
            .await;
        assert_eq!(names(&list), vec![1]);
        let (_, list) = s
            .admin(Method::GET, &format!("{CRS}?reviewer=dev"), None)
            .await;
        assert_eq!(names(&list), Vec::<i64>::new());
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.review_requested",
                None,
            )
            .await;
        let mut asked: Vec<String> = evs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"]["reviewer"].as_str().unwrap().to_string())
            .collect();
        asked.sort();
        assert_eq!(asked, vec!["admin", "rev"], "one event per new reviewer");
        // Removing one.
        let (st, c) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"reviewers": ["admin"]})),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(
            c["reviewers"],
            json!([{"user": "admin", "state": "pending"}])
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn draft_and_ready_move_the_gates_draft_condition() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        setup(&s).await;
        let (st, c) = s
            .admin(
                Method::POST,
                CRS,
                Some(json!({"source": "feature", "target": "main", "title": "WIP", "draft": true})),
            )
            .await;
        assert_eq!(st, 201, "{c}");
        assert!(!condition(&s, 1, "draft").await);
        let (st, c) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"draft": false})),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(c["draft"], false);
        assert!(condition(&s, 1, "draft").await);
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.updated",
                None,
            )
            .await;
        assert!(
            evs["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["payload"]["ready"] == true),
            "{evs}"
        );
        let (st, _) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"draft": true})),
            )
            .await;
        assert_eq!(st, 200);
        assert!(!condition(&s, 1, "draft").await);
        // A closed change request keeps its draft flag.
        s.admin(Method::POST, &format!("{CRS}/1/close"), None).await;
        let (st, b) = s
            .admin(
                Method::PATCH,
                &format!("{CRS}/1"),
                Some(json!({"draft": false})),
            )
            .await;
        assert_eq!(st, 422, "{b}");
        assert_eq!(b["error"]["details"]["field"], "draft");
        let _ = REPO;
        s.stop().await;
    }
}

#[tokio::test]
async fn the_forms_edit_labels_reviewers_and_draft_and_user_text_is_inert() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        member(&s, "rev", "developer").await;
        let viewer = member(&s, "watcher", "viewer").await;
        setup(&s).await;
        let base = "/projects/demo/code/app/change-requests";
        // The new form offers labels and reviewers (developers and up, not the viewer).
        let (st, html) = s.admin_page(&format!("{base}/new")).await;
        assert_eq!(st, 200);
        assert!(html.contains("name=\"labels\""), "{html}");
        assert!(html.contains("name=\"reviewer:rev\""), "{html}");
        assert!(!html.contains("name=\"reviewer:watcher\""), "{html}");
        let (st, loc, body) = s
            .admin_form(
                base,
                form_body(&[
                    ("source", "feature"),
                    ("target", "main"),
                    ("title", "From the form"),
                    ("labels", "bug, <script>alert(1)</script>"),
                    ("reviewer:rev", "1"),
                    ("draft", "1"),
                ]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(loc, format!("{base}/1"));
        let (_, c) = s.admin(Method::GET, &format!("{CRS}/1"), None).await;
        assert_eq!(c["labels"], json!(["<script>alert(1)</script>", "bug"]));
        assert_eq!(c["reviewers"], json!([{"user": "rev", "state": "pending"}]));
        let (_, html) = s
            .admin_page(&format!("{base}?state=all&reviewer=rev"))
            .await;
        assert!(
            html.contains("data-cr=\"1\""),
            "the reviewer filter finds it: {html}"
        );
        assert_eq!(c["draft"], true);
        let version = c["version"].as_i64().unwrap().to_string();

        // The page shows chips (escaped), reviewers with state, the edit form and "Mark ready".
        let (_, html) = s.admin_page(&format!("{base}/1")).await;
        assert!(
            !html.contains("<script>alert(1)</script>"),
            "label is escaped"
        );
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(html.contains("class=\"label-chip\""), "{html}");
        assert!(html.contains("data-reviewer=\"rev\""), "{html}");
        assert!(html.contains("id=\"mark-ready\""), "{html}");
        assert!(html.contains("id=\"edit-form\""), "{html}");
        // A viewer sees labels and reviewers but no forms.
        let r = s
            .req(Method::GET, &format!("{base}/1"), Some(&viewer))
            .send()
            .await
            .unwrap();
        let vhtml = r.text().await.unwrap();
        assert!(vhtml.contains("data-reviewer=\"rev\""));
        assert!(!vhtml.contains("id=\"edit-form\""));
        assert!(!vhtml.contains("id=\"mark-ready\""));

        // Mark ready through the form.
        let (st, loc, body) = s
            .admin_form(
                &format!("{base}/1/ready"),
                form_body(&[("version", &version)]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(loc, format!("{base}/1"));
        assert!(condition(&s, 1, "draft").await);
        // The edit form: a stale version is refused on the page, a current one saves.
        let (st, _, body) = s
            .admin_form(
                &format!("{base}/1/edit"),
                form_body(&[
                    ("version", &version),
                    ("title", "Stale"),
                    ("description", ""),
                    ("labels", ""),
                ]),
            )
            .await;
        assert_eq!(st, 409, "{body}");
        assert!(body.contains("id=\"action-error\""), "{body}");
        let (_, c) = s.admin(Method::GET, &format!("{CRS}/1"), None).await;
        let version = c["version"].as_i64().unwrap().to_string();
        let (st, _, body) = s
            .admin_form(
                &format!("{base}/1/edit"),
                form_body(&[
                    ("version", &version),
                    ("title", "Edited in the form"),
                    ("description", "Some *text*"),
                    ("labels", "ui, area/api"),
                ]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        let (_, c) = s.admin(Method::GET, &format!("{CRS}/1"), None).await;
        assert_eq!(c["title"], "Edited in the form");
        assert_eq!(c["description"], "Some *text*");
        assert_eq!(c["labels"], json!(["area/api", "ui"]));
        assert_eq!(c["reviewers"], json!([]), "no box ticked: no reviewers");
        // A bad label comes back as an error on the page, not a 500.
        let version = c["version"].as_i64().unwrap().to_string();
        let (st, _, body) = s
            .admin_form(
                &format!("{base}/1/edit"),
                form_body(&[
                    ("version", &version),
                    ("title", "x"),
                    ("labels", &"l".repeat(60)),
                ]),
            )
            .await;
        assert_eq!(st, 422, "{body}");

        // The list shows labels and filters by them.
        let (st, html) = s.admin_page(&format!("{base}?state=all&label=ui")).await;
        assert_eq!(st, 200);
        assert!(html.contains("data-cr=\"1\""), "{html}");
        assert!(html.contains("id=\"cr-filter-form\""), "{html}");
        let (_, html) = s.admin_page(&format!("{base}?state=all&label=nope")).await;
        assert!(!html.contains("data-cr=\"1\""), "{html}");
        let (_, html) = s.admin_page(&format!("{base}?state=all&draft=true")).await;
        assert!(!html.contains("data-cr=\"1\""), "ready now: {html}");
        let (_, html) = s.admin_page(&format!("{base}?author=admin")).await;
        assert!(html.contains("data-cr=\"1\""), "{html}");
        // ... and by requested reviewer (none since the edit above).
        let (_, html) = s
            .admin_page(&format!("{base}?state=all&reviewer=rev"))
            .await;
        assert!(!html.contains("data-cr=\"1\""), "{html}");
        assert!(
            html.contains("id=\"filter-reviewer\" name=\"reviewer\" value=\"rev\""),
            "{html}"
        );
        // Convert back to draft.
        let (st, _, body) = s
            .admin_form(&format!("{base}/1/draft"), form_body(&[]))
            .await;
        assert_eq!(st, 303, "{body}");
        assert!(!condition(&s, 1, "draft").await);
        s.stop().await;
    }
}
