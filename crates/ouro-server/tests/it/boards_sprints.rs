//! Sprints, the board and the roadmap over HTTP: the sprint lifecycle, reports replayed from the
//! ledger, WIP limits and swimlanes, the board's drag endpoint, pages and permissions.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const API: &str = "/api/v1/projects/demo";

/// Project `demo` with a developer `dev` and a viewer `vic`; returns their tokens.
async fn setup(s: &TestServer) -> (String, String) {
    let (st, body) = s
        .admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "demo", "name": "Demo"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let mut toks = Vec::new();
    for (name, role) in [("dev", "developer"), ("vic", "viewer")] {
        let tok = s.user(name).await;
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("{API}/members/{name}"),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(st, 200);
        toks.push(tok);
    }
    (toks.remove(0), toks.remove(0))
}

async fn item(s: &TestServer, title: &str, estimate: i64) -> String {
    let (st, it) = s
        .admin(
            Method::POST,
            &format!("{API}/items"),
            Some(json!({"type": "story", "title": title, "estimate": estimate})),
        )
        .await;
    assert_eq!(st, 201, "{it}");
    it["key"].as_str().unwrap().to_string()
}

async fn sprint(s: &TestServer, name: &str) -> i64 {
    let (st, sp) = s
        .admin(
            Method::POST,
            &format!("{API}/sprints"),
            Some(json!({"name": name, "capacity": 10})),
        )
        .await;
    assert_eq!(st, 201, "{sp}");
    assert_eq!(sp["state"], "planned");
    sp["id"].as_i64().unwrap()
}

async fn to(s: &TestServer, key: &str, state: &str) {
    let (st, b) = s
        .admin(
            Method::POST,
            &format!("{API}/items/{key}/transitions"),
            Some(json!({"to": state})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn sprint_lifecycle_and_reports() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (dev, vic) = setup(&s).await;
        let a = item(&s, "Alpha", 3).await;
        let b = item(&s, "Beta", 5).await;
        let c = item(&s, "Gamma", 2).await;
        let s1 = sprint(&s, "Sprint 1").await;
        let s2 = sprint(&s, "Sprint 2").await;

        // Duplicate names and bad dates are 422 with the field.
        let (st, e) = s
            .admin(
                Method::POST,
                &format!("{API}/sprints"),
                Some(json!({"name": "sprint 1 "})),
            )
            .await;
        assert!(st == 422 || st == 409, "{e}");
        let (st, e) = s
            .admin(
                Method::POST,
                &format!("{API}/sprints"),
                Some(json!({"name": "X", "start_at": "2026-02-02", "end_at": "2026-02-01"})),
            )
            .await;
        assert_eq!(
            (st, e["error"]["details"]["field"].as_str()),
            (422, Some("end_at"))
        );

        // Plan two items; the item JSON names the sprint, and the query language finds them.
        let (st, sp) = s
            .call(
                Method::POST,
                &format!("{API}/sprints/{s1}/items"),
                Some(&dev),
                Some(json!({"add": [a, b]})),
            )
            .await;
        assert_eq!(st, 200, "{sp}");
        assert_eq!(
            (sp["item_count"].as_i64(), sp["points"].as_i64()),
            (Some(2), Some(8))
        );
        let (_, it) = s
            .admin(Method::GET, &format!("{API}/items/{a}"), None)
            .await;
        assert_eq!(it["sprint"], "Sprint 1");
        let (_, found) = s
            .admin(
                Method::GET,
                &format!("{API}/items?q=sprint:%22sprint%201%22"),
                None,
            )
            .await;
        assert_eq!(keys(&found["items"]), vec![a.clone(), b.clone()]);
        let (_, found) = s
            .admin(Method::GET, &format!("{API}/items?q=sprint:none"), None)
            .await;
        assert_eq!(keys(&found["items"]), vec![c.clone()]);

        // A viewer cannot start a sprint; a developer can, once.
        let (st, e) = s
            .call(
                Method::POST,
                &format!("{API}/sprints/{s1}/start"),
                Some(&vic),
                None,
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (403, "auth.forbidden"));
        let (st, sp) = s
            .call(
                Method::POST,
                &format!("{API}/sprints/{s1}/start"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(st, 200, "{sp}");
        assert_eq!(
            (sp["state"].as_str(), sp["committed_points"].as_i64()),
            (Some("active"), Some(8))
        );
        let (_, cur) = s
            .admin(Method::GET, &format!("{API}/items?q=sprint:current"), None)
            .await;
        assert_eq!(keys(&cur["items"]), vec![a.clone(), b.clone()]);
        let (st, e) = s
            .call(
                Method::POST,
                &format!("{API}/sprints/{s2}/start"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (409, "sprint.already_active")
        );

        // Work happens: a is done, c joins mid-sprint (scope change).
        to(&s, &a, "Done").await;
        let (st, _) = s
            .admin(
                Method::POST,
                &format!("{API}/sprints/{s1}/items"),
                Some(json!({"add": [c]})),
            )
            .await;
        assert_eq!(st, 200);
        let (st, rep) = s
            .admin(Method::GET, &format!("{API}/sprints/{s1}/report"), None)
            .await;
        assert_eq!(st, 200, "{rep}");
        assert_eq!(rep["committed_points"], 8);
        let today = rep["days"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|d| d["remaining"].as_i64().unwrap() >= 0)
            .unwrap()
            .clone();
        assert_eq!(
            (
                today["remaining"].as_i64(),
                today["completed"].as_i64(),
                today["scope"].as_i64()
            ),
            (Some(7), Some(3), Some(10)),
            "{rep}"
        );
        // The report is history: changing an estimate after the fact is a new event, replayed.
        let (_, it) = s
            .admin(Method::GET, &format!("{API}/items/{b}"), None)
            .await;
        let (st, _) = s
            .admin(
                Method::PATCH,
                &format!("{API}/items/{b}"),
                Some(json!({"estimate": 8, "version": it["version"]})),
            )
            .await;
        assert_eq!(st, 200);
        let (_, rep) = s
            .admin(Method::GET, &format!("{API}/sprints/{s1}/report"), None)
            .await;
        let last = rep["days"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|d| d["remaining"].as_i64().unwrap() >= 0)
            .unwrap()
            .clone();
        assert_eq!(last["remaining"], 10, "{rep}");

        // Charts are SVG.
        for chart in ["burndown.svg", "burnup.svg"] {
            let r = s
                .req(
                    Method::GET,
                    &format!("{API}/sprints/{s1}/{chart}"),
                    Some(&vic),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "image/svg+xml");
            let body = r.text().await.unwrap();
            assert!(
                body.starts_with("<svg") && body.contains("Sprint 1"),
                "{body}"
            );
        }

        // Complete, moving unfinished items (b, c) to the next planned sprint.
        let (st, sp) = s
            .call(
                Method::POST,
                &format!("{API}/sprints/{s1}/complete"),
                Some(&dev),
                Some(json!({"move_to": "next"})),
            )
            .await;
        assert_eq!(st, 200, "{sp}");
        assert_eq!(
            (sp["state"].as_str(), sp["completed_points"].as_i64()),
            (Some("completed"), Some(3))
        );
        let (_, items2) = s
            .admin(Method::GET, &format!("{API}/sprints/{s2}/items"), None)
            .await;
        assert_eq!(keys(&items2), vec![b.clone(), c.clone()]);
        let (_, it) = s
            .admin(Method::GET, &format!("{API}/items/{a}"), None)
            .await;
        assert_eq!(it["sprint"], "Sprint 1");
        // A completed sprint cannot start again or take items.
        let (st, e) = s
            .admin(Method::POST, &format!("{API}/sprints/{s1}/start"), None)
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "sprint.invalid_state"));

        // Sprint 2: start, complete to the backlog.
        let (st, _) = s
            .admin(Method::POST, &format!("{API}/sprints/{s2}/start"), None)
            .await;
        assert_eq!(st, 200);
        let (st, e) = s
            .admin(
                Method::POST,
                &format!("{API}/sprints/{s2}/complete"),
                Some(json!({"move_to": "sideways"})),
            )
            .await;
        assert_eq!(
            (st, e["error"]["details"]["field"].as_str()),
            (422, Some("move_to"))
        );
        let (st, _) = s
            .admin(
                Method::POST,
                &format!("{API}/sprints/{s2}/complete"),
                Some(json!({"move_to": "backlog"})),
            )
            .await;
        assert_eq!(st, 200);
        let (_, back) = s
            .admin(Method::GET, &format!("{API}/items?q=sprint:none"), None)
            .await;
        assert_eq!(keys(&back["items"]), vec![b.clone(), c.clone()]);

        // Bulk edit plans items by sprint name; a completed sprint is refused.
        let s3 = sprint(&s, "Sprint 3").await;
        let (st, out) = s
            .admin(
                Method::POST,
                &format!("{API}/items/bulk"),
                Some(json!({"keys": [b, c], "set": {"sprint": "sprint 3"}})),
            )
            .await;
        assert_eq!(st, 200, "{out}");
        assert_eq!(out[0]["sprint"], "Sprint 3");
        let (_, items3) = s
            .admin(Method::GET, &format!("{API}/sprints/{s3}/items"), None)
            .await;
        assert_eq!(keys(&items3), vec![b.clone(), c.clone()]);
        let (st, e) = s
            .admin(
                Method::POST,
                &format!("{API}/items/bulk"),
                Some(json!({"keys": [b], "set": {"sprint": "Sprint 1"}})),
            )
            .await;
        assert_eq!(
            (st, e["error"]["details"]["field"].as_str()),
            (422, Some("sprint"))
        );
        let (st, _) = s
            .admin(
                Method::POST,
                &format!("{API}/items/bulk"),
                Some(json!({"keys": [b, c], "set": {"sprint": null}})),
            )
            .await;
        assert_eq!(st, 200);

        // Velocity: both completed sprints, oldest first.
        let (_, vel) = s.admin(Method::GET, &format!("{API}/velocity"), None).await;
        let names: Vec<&str> = vel
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Sprint 1", "Sprint 2"]);
        let r = s
            .req(Method::GET, &format!("{API}/velocity.svg"), Some(&vic))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert_eq!(body.matches("class=\"bar\"").count(), 4, "{body}");

        // Stale version on PATCH is 409.
        let (st, e) = s
            .admin(
                Method::PATCH,
                &format!("{API}/sprints/{s2}"),
                Some(json!({"goal": "x", "version": 1})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (409, "conflict.stale_version")
        );

        // The ledger has the sprint events.
        let (_, evs) = s
            .admin(Method::GET, "/api/v1/events?kind=sprint.*", None)
            .await;
        let kinds: Vec<&str> = evs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"sprint.started") && kinds.contains(&"sprint.completed"),
            "{kinds:?}"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn board_columns_wip_swimlanes_and_roadmap() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (dev, _vic) = setup(&s).await;
        let mut ks = Vec::new();
        for t in ["One", "Two", "Three"] {
            ks.push(item(&s, t, 1).await);
        }
        let (st, _) = s
            .admin(
                Method::PATCH,
                &format!("{API}/items/{}", ks[0]),
                Some(json!({"assignee": "dev"})),
            )
            .await;
        assert_eq!(st, 200);
        // A developer may not set WIP limits; a maintainer may; unknown columns are 422.
        let (st, _) = s
            .call(
                Method::PUT,
                &format!("{API}/board/columns/New"),
                Some(&dev),
                Some(json!({"wip_limit": 2})),
            )
            .await;
        assert_eq!(st, 403);
        let (st, c) = s
            .admin(
                Method::PUT,
                &format!("{API}/board/columns/new"),
                Some(json!({"wip_limit": 2})),
            )
            .await;
        assert_eq!((st, c["state"].as_str()), (200, Some("New")), "{c}");
        let (st, e) = s
            .admin(
                Method::PUT,
                &format!("{API}/board/columns/Nope"),
                Some(json!({"wip_limit": 2})),
            )
            .await;
        assert_eq!(
            (st, e["error"]["details"]["field"].as_str()),
            (422, Some("state")),
            "{e}"
        );

        let (st, board) = s
            .call(Method::GET, &format!("{API}/board"), Some(&dev), None)
            .await;
        assert_eq!(st, 200, "{board}");
        let cols = board["columns"].as_array().unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c["state"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec!["New", "Ready", "In progress", "In review", "Done"]
        );
        assert_eq!(cols[0]["count"], 3);
        assert_eq!(cols[0]["wip_limit"], 2);
        assert_eq!(cols[0]["over_limit"], true);
        assert_eq!(cols[1]["over_limit"], false);
        assert_eq!(keys(&cols[0]["cards"]), ks);

        // Filter with the query language; swimlanes by assignee.
        let (_, board) = s
            .admin(Method::GET, &format!("{API}/board?q=assignee:dev"), None)
            .await;
        assert_eq!(keys(&board["columns"][0]["cards"]), vec![ks[0].clone()]);
        assert_eq!(board["columns"][0]["over_limit"], false);
        let (_, board) = s
            .admin(Method::GET, &format!("{API}/board?swimlane=assignee"), None)
            .await;
        let lanes = board["lanes"].as_array().unwrap();
        assert_eq!(lanes.len(), 2, "{board}");
        assert_eq!(lanes[0]["name"], "dev");
        assert_eq!(lanes[0]["cards"][0], json!([ks[0]]));
        assert_eq!(lanes[1]["name"], Value::Null);
        assert_eq!(lanes[1]["cards"][0], json!([ks[1], ks[2]]));
        let (st, e) = s
            .admin(Method::GET, &format!("{API}/board?swimlane=color"), None)
            .await;
        assert_eq!(
            (st, e["error"]["details"]["field"].as_str()),
            (422, Some("swimlane"))
        );

        // Roadmap: an epic with a target date and progress from its stories.
        let (st, epic) = s
            .admin(
                Method::POST,
                &format!("{API}/items"),
                Some(json!({"type": "epic", "title": "Big <one>", "target_at": "2027-01-01"})),
            )
            .await;
        assert_eq!(st, 201, "{epic}");
        let ek = epic["key"].as_str().unwrap();
        for k in &ks[..2] {
            let (st, b) = s
                .admin(
                    Method::PATCH,
                    &format!("{API}/items/{k}"),
                    Some(json!({"parent": ek})),
                )
                .await;
            assert_eq!(st, 200, "{b}");
        }
        to(&s, &ks[0], "Done").await;
        let (st, rm) = s.admin(Method::GET, &format!("{API}/roadmap"), None).await;
        assert_eq!(st, 200, "{rm}");
        let e0 = &rm["dated"][0];
        assert_eq!(e0["key"], ek);
        assert_eq!(
            (
                e0["progress"]["done"].as_i64(),
                e0["progress"]["total"].as_i64()
            ),
            (Some(1), Some(2)),
            "{rm}"
        );
        assert_eq!(e0["progress"]["percent"], 50);
        s.stop().await;
    }
}

async fn page(s: &TestServer, tok: &str, path: &str) -> (u16, String) {
    let r = s.req(Method::GET, path, Some(tok)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn form(
    s: &TestServer,
    tok: &str,
    path: &str,
    fields: &[(&str, &str)],
    js: bool,
) -> (u16, String) {
    let mut r = s
        .req(Method::POST, path, Some(tok))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(fields));
    if js {
        r = r.header("x-board-js", "1");
    }
    let res = r.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn board_and_sprint_pages() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (dev, vic) = setup(&s).await;
        let a = item(&s, "Card <a>", 2).await;
        let b = item(&s, "Second card", 3).await;
        to(&s, &a, "Done").await;

        // The board page shows the cards, the fallback form and the script.
        let (st, html) = page(&s, &dev, "/projects/demo/plan/board").await;
        assert_eq!(st, 200, "{html}");
        assert!(
            html.contains(&format!("data-key=\"{a}\""))
                && html.contains(&format!("data-key=\"{b}\""))
        );
        assert!(html.contains("Card &#60;a&#62;") && !html.contains("Card <a>"));
        assert!(html.contains("/assets/board.js") && html.contains("class=\"move-form\""));
        assert!(
            html.contains(">Board</a>")
                && html.contains(">Sprints</a>")
                && html.contains(">Roadmap</a>")
        );
        let (st, js) = page(&s, &vic, "/assets/board.js").await;
        assert!(st == 200 && js.contains("x-board-js"));
        // Over the WIP limit: the column is marked and shows count/limit.
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("{API}/board/columns/Done"),
                Some(json!({"wip_limit": 1})),
            )
            .await;
        assert_eq!(st, 200);
        to(&s, &b, "Done").await;
        let (_, html) = page(&s, &vic, "/projects/demo/plan/board?swimlane=assignee").await;
        assert!(html.contains("2/1 over the WIP limit"), "{html}");
        assert!(html.contains("board-col over-limit"));
        // A viewer sees no move forms.
        assert!(!html.contains("class=\"move-form\""));

        // The drag endpoint: a done item may only reopen to Ready; the refusal lists that.
        let (st, body) = form(
            &s,
            &dev,
            "/projects/demo/plan/board/move",
            &[("key", &a), ("to", "In progress")],
            true,
        )
        .await;
        assert_eq!(st, 422, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "item.invalid_transition");
        assert_eq!(v["allowed"], json!(["Ready"]));
        let (st, body) = form(
            &s,
            &dev,
            "/projects/demo/plan/board/move",
            &[("key", &a), ("to", "Ready")],
            true,
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let (_, it) = s
            .admin(Method::GET, &format!("{API}/items/{a}"), None)
            .await;
        assert_eq!(it["state"], "Ready");
        // Re-rank by dropping before another card; a viewer may not move.
        let (st, _) = form(
            &s,
            &dev,
            "/projects/demo/plan/board/move",
            &[("key", &b), ("before", &a)],
            true,
        )
        .await;
        assert_eq!(st, 200);
        let (_, list) = s.admin(Method::GET, &format!("{API}/items"), None).await;
        assert_eq!(keys(&list["items"]), vec![b.clone(), a.clone()]);
        let (st, _) = form(
            &s,
            &vic,
            "/projects/demo/plan/board/move",
            &[("key", &b), ("to", "New")],
            true,
        )
        .await;
        assert_eq!(st, 403);

        // Sprint pages: create through the form, plan, start; charts are inline SVG.
        let (st, _) = form(
            &s,
            &dev,
            "/projects/demo/plan/sprints",
            &[("name", "Sprint <1>"), ("capacity", "1")],
            false,
        )
        .await;
        assert_eq!(st, 303);
        let (_, list) = s.admin(Method::GET, &format!("{API}/sprints"), None).await;
        let id = list[0]["id"].as_i64().unwrap();
        let sp = format!("/projects/demo/plan/sprints/{id}");
        let (st, _) = form(&s, &dev, &format!("{sp}/items"), &[("add", &a)], false).await;
        assert_eq!(st, 303);
        let (st, html) = page(&s, &vic, &sp).await;
        assert_eq!(st, 200);
        assert!(
            html.contains("Sprint &#60;1&#62;") && html.contains("over capacity"),
            "{html}"
        );
        assert!(html.contains("<svg") && html.contains("Burndown") && html.contains("Burnup"));
        assert!(
            !html.contains("Start sprint"),
            "viewers get no start button"
        );
        let (_, html) = page(&s, &dev, &sp).await;
        assert!(html.contains("Start sprint"));
        let (st, _) = form(&s, &dev, &format!("{sp}/start"), &[], false).await;
        assert_eq!(st, 303);
        let (_, html) = page(&s, &dev, &sp).await;
        assert!(html.contains("Complete sprint") && html.contains("sprint-active"));
        let (st, html) = page(&s, &vic, "/projects/demo/plan/sprints").await;
        assert_eq!(st, 200);
        assert!(html.contains("Sprint &#60;1&#62;") && html.contains("Velocity"));
        let (st, html) = page(&s, &vic, "/projects/demo/plan/roadmap").await;
        assert_eq!(st, 200);
        assert!(html.contains("Nothing is scheduled"), "{html}");
        s.stop().await;
    }
}
