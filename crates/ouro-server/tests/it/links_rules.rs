//! Plan over HTTP: item links, the trail fed by synthetic events of later phases, automation
//! rules run by the `plan-automation` consumer, and deleting items.

use std::time::{Duration, Instant};

use crate::support::*;
use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent};
use reqwest::Method;
use serde_json::{Value, json};

const ITEMS: &str = "/api/v1/projects/demo/items";
const RULES: &str = "/api/v1/projects/demo/rules";

async fn with_demo(s: &TestServer) -> ouro_store::projects::Project {
    s.demo_project().await
}

async fn create(s: &TestServer, title: &str) -> String {
    let (st, item) = s
        .admin(
            Method::POST,
            ITEMS,
            Some(json!({"type": "story", "title": title})),
        )
        .await;
    assert_eq!(st, 201, "{item}");
    item["key"].as_str().unwrap().to_string()
}

/// Appends an event as a later phase would (those phases do not exist yet).
async fn emit(
    s: &TestServer,
    p: &ouro_store::projects::Project,
    kind: ouro_core::EventKind,
    subject: &str,
    payload: Value,
) {
    let mut tx = s.state.store.begin().await.unwrap();
    tx.append(
        NewEvent::new(kind, &Actor::System("test"), subject, payload).in_project(p.id, &p.slug),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Polls `path` until `ok` holds for the body (consumers run in the background).
async fn eventually(s: &TestServer, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, body) = s.admin(Method::GET, path, None).await;
        assert_eq!(st, 200, "{path}: {body}");
        if ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting on {path}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn item_links_over_http() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let a = create(&s, "Checkout").await;
        let b = create(&s, "Payment provider").await;
        let (st, link) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/{a}/links"),
                Some(json!({"kind": "blocks", "target": b})),
            )
            .await;
        assert_eq!(st, 201, "{link}");
        assert_eq!(link["label"], "blocks");
        let (st, again) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/{a}/links"),
                Some(json!({"kind": "blocks", "target": b})),
            )
            .await;
        assert_eq!((st, error_code(&again)), (409, "item.link_exists".into()));
        let (st, bad) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/{a}/links"),
                Some(json!({"kind": "explodes", "target": b})),
            )
            .await;
        assert_eq!(st, 422, "{bad}");
        let (st, bad) = s
            .admin(Method::POST, &format!("{ITEMS}/{a}/links"), Some(json!({})))
            .await;
        assert_eq!(st, 422, "{bad}");
        let (_, from_b) = s
            .admin(Method::GET, &format!("{ITEMS}/{b}/links"), None)
            .await;
        assert_eq!(from_b["items"][0]["label"], "blocked by");
        assert_eq!(from_b["items"][0]["key"], a);
        // A subject link by hand, then the same again is a conflict.
        let subject = json!({"subject": {"type": "commit", "id": "abc123", "title": "Wire it"}});
        let (st, l) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/{a}/links"),
                Some(subject.clone()),
            )
            .await;
        assert_eq!((st, &l["type"]), (201, &json!("commit")), "{l}");
        let (st, _) = s
            .admin(Method::POST, &format!("{ITEMS}/{a}/links"), Some(subject))
            .await;
        assert_eq!(st, 409);
        // Remove from the other side.
        let id = link["id"].as_i64().unwrap();
        let (st, _) = s
            .admin(Method::DELETE, &format!("{ITEMS}/{b}/links/{id}"), None)
            .await;
        assert_eq!(st, 204);
        let (_, after) = s
            .admin(Method::GET, &format!("{ITEMS}/{a}/links"), None)
            .await;
        assert_eq!(after["items"], json!([]));
        assert_eq!(after["subjects"].as_array().unwrap().len(), 1);
        let (st, gone) = s
            .admin(Method::DELETE, &format!("{ITEMS}/{b}/links/{id}"), None)
            .await;
        assert_eq!((st, error_code(&gone)), (404, "item.link_not_found".into()));
        s.stop().await;
    }
}

#[tokio::test]
async fn trail_follows_commit_to_deployment() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let p = with_demo(&s).await;
        let key = create(&s, "Pay by card").await;
        let other = create(&s, "Unrelated").await;
        let (_, empty) = s
            .admin(Method::GET, &format!("{ITEMS}/{key}/trail"), None)
            .await;
        let stages: Vec<&str> = empty["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            [
                "commit",
                "change_request",
                "pipeline_run",
                "release",
                "deployment",
                "incident"
            ]
        );
        emit(
            &s,
            &p,
            ev::CODE_PUSHED,
            "repo-1",
            json!({"ref": "refs/heads/card",
            "commits": [{"id": "c0ffee1", "message": format!("Card form for {key}\n\nDetails")},
                        {"id": "dead000", "message": format!("Tidy {other}")}]}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::CR_OPENED,
            "7",
            json!({"title": format!("Fixes {key}: card payments"), "number": 7}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::PIPELINE_QUEUED,
            "41",
            json!({"commit": "c0ffee1", "name": "ci #41"}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::PIPELINE_FINISHED,
            "41",
            json!({"commit": "c0ffee1", "status": "success"}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::CR_MERGED,
            "7",
            json!({"title": format!("Fixes {key}: card payments")}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::RELEASE_PUBLISHED,
            "r-1",
            json!({"version": "1.4.0", "commits": ["c0ffee1"]}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::DEPLOYMENT_STARTED,
            "d-1",
            json!({"release": "r-1", "environment": "staging", "version": "1.4.0"}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::DEPLOYMENT_SUCCEEDED,
            "d-1",
            json!({"release": "r-1", "environment": "staging"}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::DEPLOYMENT_FAILED,
            "d-2",
            json!({"release": "r-1", "environment": "production", "version": "1.4.0"}),
        )
        .await;
        let trail = eventually(&s, &format!("{ITEMS}/{key}/trail"), |t| {
            t["stages"][4]["entries"]
                .as_array()
                .is_some_and(|e| e.len() == 2)
        })
        .await;
        let st = |i: usize| trail["stages"][i]["entries"].clone();
        assert_eq!(st(0)[0]["id"], "c0ffee1");
        assert_eq!(st(0)[0]["title"], format!("Card form for {key}"));
        assert_eq!(st(0).as_array().unwrap().len(), 1, "only its own commit");
        assert_eq!(
            (&st(1)[0]["id"], &st(1)[0]["status"]),
            (&json!("7"), &json!("merged"))
        );
        assert_eq!(st(2)[0]["status"], "success");
        assert_eq!(st(2)[0]["title"], "ci #41");
        assert_eq!(
            (&st(3)[0]["title"], &st(3)[0]["status"]),
            (&json!("1.4.0"), &json!("published"))
        );
        // Deployments, per environment.
        assert_eq!(st(4)[0]["environment"], "production");
        assert_eq!(st(4)[0]["status"], "failed");
        assert_eq!(st(4)[1]["environment"], "staging");
        assert_eq!(st(4)[1]["status"], "succeeded");
        // The other item saw only its commit.
        let (_, o) = s
            .admin(Method::GET, &format!("{ITEMS}/{other}/trail"), None)
            .await;
        assert_eq!(o["stages"][0]["entries"][0]["id"], "dead000");
        assert_eq!(o["stages"][2]["entries"], json!([]));
        // The item page shows the trail.
        let html = s
            .req(
                Method::GET,
                &format!("/projects/demo/plan/items/{key}"),
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("id=\"trail\""), "trail section");
        assert!(
            html.contains("ci #41") && html.contains("production"),
            "trail entries"
        );
        s.stop().await;
    }
}

async fn state_of(s: &TestServer, key: &str) -> String {
    let (_, item) = s.admin(Method::GET, &format!("{ITEMS}/{key}"), None).await;
    item["state"].as_str().unwrap().to_string()
}

async fn runs_of(s: &TestServer, rule: i64, n: usize) -> Value {
    eventually(s, &format!("{RULES}/{rule}/runs"), |r| {
        r.as_array().is_some_and(|a| a.len() >= n)
    })
    .await
}

#[tokio::test]
async fn default_rules_move_items_through_review_to_done() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let p = with_demo(&s).await;
        let key = create(&s, "Login").await;
        let mentioned = create(&s, "Mentioned only").await;
        let (st, rules) = s.admin(Method::GET, RULES, None).await;
        assert_eq!(st, 200, "{rules}");
        assert_eq!(rules.as_array().unwrap().len(), 2, "{rules}");
        assert_eq!(rules[0]["when"]["event"], "cr.opened");
        assert_eq!(rules[1]["when"]["references"], "closing");
        let (opened, merged) = (
            rules[0]["id"].as_i64().unwrap(),
            rules[1]["id"].as_i64().unwrap(),
        );

        emit(
            &s,
            &p,
            ev::CR_OPENED,
            "3",
            json!({"title": format!("Fix login {key}"), "description": format!("see {mentioned}")}),
        )
        .await;
        let runs = runs_of(&s, opened, 2).await;
        assert!(
            runs.as_array()
                .unwrap()
                .iter()
                .all(|r| r["outcome"] == "ok"),
            "{runs}"
        );
        assert_eq!(state_of(&s, &key).await, "In review");
        assert_eq!(state_of(&s, &mentioned).await, "In review");

        emit(&s, &p, ev::CR_MERGED, "3", json!({"title": format!("Fix login {key}"), "description": format!("fixes {key}; see {mentioned}")})).await;
        let runs = runs_of(&s, merged, 2).await;
        let by_item = |k: &str| {
            runs.as_array()
                .unwrap()
                .iter()
                .find(|r| r["item"] == k)
                .cloned()
                .unwrap()
        };
        assert_eq!(by_item(&key)["outcome"], "ok");
        assert_eq!(by_item(&mentioned)["outcome"], "skipped");
        assert_eq!(state_of(&s, &key).await, "Done");
        assert_eq!(state_of(&s, &mentioned).await, "In review");
        // History credits automation.
        let (_, hist) = s
            .admin(Method::GET, &format!("{ITEMS}/{key}/history"), None)
            .await;
        assert!(hist.to_string().contains("system:automation"), "{hist}");
        s.stop().await;
    }
}

#[tokio::test]
async fn rules_are_edited_disabled_and_logged() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let p = with_demo(&s).await;
        let key = create(&s, "Flaky checkout").await;
        let (st, rule) = s
            .admin(
                Method::POST,
                RULES,
                Some(json!({"name": "Deployed: label and comment",
                    "when": {"event": "deploy.succeeded", "type": "story"},
                    "then": [{"add_label": "deployed"}, {"comment": "Deployed to production."}, {"transition": "Nowhere"}]})),
            )
            .await;
        assert_eq!(st, 201, "{rule}");
        let id = rule["id"].as_i64().unwrap();
        // A bad event kind names the field.
        let (st, bad) = s
            .admin(
                Method::POST,
                RULES,
                Some(json!({"name": "x", "when": {"event": "nope"}, "then": [{"comment": "c"}]})),
            )
            .await;
        assert_eq!(st, 422, "{bad}");
        assert_eq!(bad["error"]["details"]["field"], "when.event", "{bad}");

        // The deployment is linked to the item through its commit and release.
        emit(
            &s,
            &p,
            ev::CODE_PUSHED,
            "repo-1",
            json!({"commits": [{"id": "aa11", "message": format!("Fix {key}")}]}),
        )
        .await;
        emit(
            &s,
            &p,
            ev::RELEASE_PUBLISHED,
            "r-9",
            json!({"version": "2.0", "commits": ["aa11"]}),
        )
        .await;
        eventually(&s, &format!("{ITEMS}/{key}/trail"), |t| {
            t["stages"][3]["entries"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await;
        emit(
            &s,
            &p,
            ev::DEPLOYMENT_SUCCEEDED,
            "d-9",
            json!({"release": "r-9", "environment": "production"}),
        )
        .await;
        let runs = runs_of(&s, id, 1).await;
        assert_eq!(runs[0]["outcome"], "failed", "{runs}");
        let msg = runs[0]["message"].as_str().unwrap();
        assert!(
            msg.contains("labelled deployed") && msg.contains("allowed"),
            "{msg}"
        );
        let (_, item) = s.admin(Method::GET, &format!("{ITEMS}/{key}"), None).await;
        assert_eq!(item["labels"], json!(["deployed"]));

        // Disabled: the next deployment does nothing.
        let (st, off) = s
            .admin(
                Method::PATCH,
                &format!("{RULES}/{id}"),
                Some(json!({"enabled": false, "version": rule["version"]})),
            )
            .await;
        assert_eq!((st, &off["enabled"]), (200, &json!(false)), "{off}");
        let (st, stale) = s
            .admin(
                Method::PATCH,
                &format!("{RULES}/{id}"),
                Some(json!({"enabled": true, "version": rule["version"]})),
            )
            .await;
        assert_eq!(
            (st, error_code(&stale)),
            (409, "conflict.stale_version".into()),
            "{stale}"
        );
        emit(
            &s,
            &p,
            ev::DEPLOYMENT_SUCCEEDED,
            "d-10",
            json!({"release": "r-9", "environment": "production"}),
        )
        .await;
        // A marker event after it: once the automation consumer has passed it, d-10 was seen.
        let marker = create(&s, "marker").await;
        let (st, _) = s
            .admin(
                Method::POST,
                RULES,
                Some(json!({"name": "marker", "when": {"event": "item.commented"}, "then": [{"add_label": "seen"}]})),
            )
            .await;
        assert_eq!(st, 201);
        let (st, _) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/{marker}/comments"),
                Some(json!({"body": "hi"})),
            )
            .await;
        assert_eq!(st, 201);
        eventually(&s, &format!("{ITEMS}/{marker}"), |i| {
            i["labels"] == json!(["seen"])
        })
        .await;
        let (_, runs) = s
            .admin(Method::GET, &format!("{RULES}/{id}/runs"), None)
            .await;
        assert_eq!(
            runs.as_array().unwrap().len(),
            1,
            "a disabled rule does not run: {runs}"
        );

        // Viewers read rules but cannot change them.
        let vera = s.user("vera").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/vera",
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert!(st == 200 || st == 201, "{st}");
        let (st, _) = s.call(Method::GET, RULES, Some(&vera), None).await;
        assert_eq!(st, 200);
        let (st, _) = s
            .call(Method::DELETE, &format!("{RULES}/{id}"), Some(&vera), None)
            .await;
        assert_eq!(st, 403);
        let (st, _) = s
            .admin(Method::DELETE, &format!("{RULES}/{id}"), None)
            .await;
        assert_eq!(st, 204);
        let (st, gone) = s.admin(Method::GET, &format!("{RULES}/{id}"), None).await;
        assert_eq!((st, error_code(&gone)), (404, "rule.not_found".into()));
        s.stop().await;
    }
}

#[tokio::test]
async fn deleted_keys_are_never_reused() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let a = create(&s, "One").await;
        let b = create(&s, "Two").await;
        let (st, _) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/{a}/links"),
                Some(json!({"kind": "relates", "target": b})),
            )
            .await;
        assert_eq!(st, 201);
        let dev = s.user("dev").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/dev",
                Some(json!({"role": "developer"})),
            )
            .await;
        assert!(st == 200 || st == 201);
        let (st, _) = s
            .call(Method::DELETE, &format!("{ITEMS}/{b}"), Some(&dev), None)
            .await;
        assert_eq!(st, 403, "developers cannot delete");
        let (st, _) = s.admin(Method::DELETE, &format!("{ITEMS}/{b}"), None).await;
        assert_eq!(st, 204);
        let (st, gone) = s.admin(Method::GET, &format!("{ITEMS}/{b}"), None).await;
        assert_eq!((st, error_code(&gone)), (404, "item.not_found".into()));
        let (_, links) = s
            .admin(Method::GET, &format!("{ITEMS}/{a}/links"), None)
            .await;
        assert_eq!(links["items"], json!([]), "links go with the item");
        let c = create(&s, "Three").await;
        assert_eq!(c, "DEMO-3", "DEMO-2 is not handed out again");
        let (_, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=item.deleted",
                None,
            )
            .await;
        assert_eq!(evs["items"][0]["payload"]["key"], b, "{evs}");
        s.stop().await;
    }
}

async fn form(s: &TestServer, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
    s.admin_form(path, form_body(fields)).await
}

async fn page(s: &TestServer, path: &str) -> (u16, String) {
    s.admin_page(path).await
}

#[tokio::test]
async fn links_delete_and_rules_in_the_ui() {
    let s = TestServer::start(&ouro_store::testing::TestDb::Sqlite).await;
    with_demo(&s).await;
    let a = create(&s, "Checkout").await;
    let b = create(&s, "<script>alert(1)</script>").await;
    let item_page = format!("/projects/demo/plan/items/{a}");
    let (st, loc, _) = form(
        &s,
        &format!("{item_page}/links"),
        &[("kind", "blocks"), ("target", &b)],
    )
    .await;
    assert_eq!(
        (st, loc.as_str()),
        (303, format!("{item_page}#links").as_str())
    );
    let (_, html) = page(&s, &item_page).await;
    assert!(html.contains("id=\"link-list\"") && html.contains(&b));
    assert!(
        !html.contains("<script>alert(1)</script>"),
        "titles are escaped"
    );
    // A bad target comes back in the form with the reason.
    let (st, _, html) = form(
        &s,
        &format!("{item_page}/links"),
        &[("kind", "blocks"), ("target", "DEMO-99")],
    )
    .await;
    assert_eq!(st, 404);
    assert!(html.contains("id=\"link-error\""), "{html}");

    // Rules: the list shows the defaults; a new rule is added with the form; a bad one says why.
    let (st, html) = page(&s, "/projects/demo/plan/rules").await;
    assert_eq!(st, 200);
    assert!(html.contains("Change request opened: In review"));
    let (st, _, html) = form(
        &s,
        "/projects/demo/plan/rules",
        &[
            ("name", "Needs an action"),
            ("event", "cr.opened"),
            ("references", "any"),
        ],
    )
    .await;
    assert_eq!(st, 422);
    assert!(html.contains("1 to 10 actions"), "{html}");
    let (st, _, _) = form(
        &s,
        "/projects/demo/plan/rules",
        &[
            ("name", "Bugs get triage"),
            ("event", "item.created"),
            ("type", "bug"),
            ("add_label", "triage"),
        ],
    )
    .await;
    assert_eq!(st, 303);
    let (_, rules) = s.admin(Method::GET, RULES, None).await;
    let rule = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Bugs get triage")
        .cloned()
        .unwrap();
    assert_eq!(rule["when"]["type"], "bug");
    assert_eq!(rule["then"], json!([{"add_label": "triage"}]));
    let (st, bug) = s
        .admin(
            Method::POST,
            ITEMS,
            Some(json!({"type": "bug", "title": "Crash"})),
        )
        .await;
    assert_eq!(st, 201);
    let bug_key = bug["key"].as_str().unwrap().to_string();
    eventually(&s, &format!("{ITEMS}/{bug_key}"), |i| {
        i["labels"] == json!(["triage"])
    })
    .await;
    let id = rule["id"].as_i64().unwrap();
    let (st, html) = page(&s, &format!("/projects/demo/plan/rules/{id}")).await;
    assert_eq!(st, 200);
    assert!(
        html.contains("id=\"run-log\"") && html.contains(&bug_key),
        "{html}"
    );
    // Disable from the list.
    let (st, _, _) = form(
        &s,
        &format!("/projects/demo/plan/rules/{id}/toggle"),
        &[("on", "false")],
    )
    .await;
    assert_eq!(st, 303);
    let (_, r) = s.admin(Method::GET, &format!("{RULES}/{id}"), None).await;
    assert_eq!(r["enabled"], false);

    // Deleting an item from its page goes back to the backlog.
    let (st, loc, _) = form(&s, &format!("/projects/demo/plan/items/{b}/delete"), &[]).await;
    assert_eq!((st, loc.as_str()), (303, "/projects/demo/plan"));
    let (st, _) = page(&s, &format!("/projects/demo/plan/items/{b}")).await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test]
async fn csv_import_page_previews_then_imports() {
    let s = TestServer::start(&ouro_store::testing::TestDb::Sqlite).await;
    with_demo(&s).await;
    let (st, html) = page(&s, "/projects/demo/plan/import").await;
    assert_eq!(st, 200);
    assert!(html.contains("id=\"import-form\""));
    let csv = "Summary,Issue Type,Priority,Story Points\nPay by card,Story,Highest,3\nRefund fails,Bug,Low,\n";
    let (st, _, html) = form(
        &s,
        "/projects/demo/plan/import",
        &[("csv", csv), ("mode", "preview")],
    )
    .await;
    assert_eq!(st, 200);
    assert!(
        html.contains("id=\"preview\"") && html.contains("Refund fails"),
        "{html}"
    );
    let (_, page_of_items) = s.admin(Method::GET, ITEMS, None).await;
    assert_eq!(
        page_of_items["items"],
        json!([]),
        "a preview writes nothing"
    );
    let bad = "Summary,Issue Type,Story Points\nOk,Story,1\nBroken,Story,lots\n";
    let (st, _, html) = form(
        &s,
        "/projects/demo/plan/import",
        &[("csv", bad), ("mode", "import")],
    )
    .await;
    assert_eq!(st, 422);
    assert!(
        html.contains("id=\"row-errors\"") && html.contains("<td>3</td>"),
        "{html}"
    );
    let (st, loc, _) = form(
        &s,
        "/projects/demo/plan/import",
        &[("csv", csv), ("mode", "import")],
    )
    .await;
    assert_eq!((st, loc.as_str()), (303, "/projects/demo/plan"));
    let (_, items) = s.admin(Method::GET, ITEMS, None).await;
    assert_eq!(items["items"].as_array().unwrap().len(), 2);
    s.stop().await;
}
