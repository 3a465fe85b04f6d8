//! Plan over HTTP: the items contract, workflows, conflicts, comments, history and permissions.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const ITEMS: &str = "/api/v1/projects/demo/items";

async fn with_demo(s: &TestServer) {
    s.demo_project().await;
}

async fn create(s: &TestServer, body: Value) -> Value {
    let (st, item) = s.admin(Method::POST, ITEMS, Some(body)).await;
    assert_eq!(st, 201, "{item}");
    item
}

#[tokio::test]
async fn items_contract_flow() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let item = create(&s, json!({"type": "story", "title": "Pay by card"})).await;
        assert_eq!(item["key"], "DEMO-1");
        assert_eq!(item["number"], 1);
        assert_eq!(item["type"], "story");
        assert_eq!(item["state"], "New");
        assert_eq!(item["state_category"], "todo");
        assert_eq!(item["reporter"], "admin");
        assert_eq!(item["assignee"], Value::Null);
        assert_eq!(item["priority"], "none");
        assert_eq!(item["labels"], json!([]));
        assert_eq!(item["version"], 1);
        create(&s, json!({"type": "bug", "title": "Refund fails"})).await;

        let (st, got) = s.admin(Method::GET, &format!("{ITEMS}/DEMO-1"), None).await;
        assert_eq!((st, &got["title"]), (200, &json!("Pay by card")));
        let (st, got) = s.admin(Method::GET, &format!("{ITEMS}/demo-1"), None).await;
        assert_eq!((st, &got["key"]), (200, &json!("DEMO-1")));

        let (st, page) = s.admin(Method::GET, &format!("{ITEMS}?q=card"), None).await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        assert_eq!(page["items"][0]["key"], "DEMO-1");
        assert_eq!(page["next_cursor"], Value::Null);
        let (_, page) = s
            .admin(Method::GET, &format!("{ITEMS}?type=bug"), None)
            .await;
        assert_eq!(page["items"][0]["key"], "DEMO-2");
        let (_, page) = s
            .admin(Method::GET, &format!("{ITEMS}?limit=1"), None)
            .await;
        let cursor = page["next_cursor"].as_str().unwrap().to_string();
        assert!(cursor.starts_with("r:"), "{cursor}");
        let (_, page) = s
            .admin(
                Method::GET,
                &format!("{ITEMS}?limit=1&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(page["items"][0]["key"], "DEMO-2");

        let (st, moved) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/DEMO-1/transitions"),
                Some(json!({"to": "In progress"})),
            )
            .await;
        assert_eq!(st, 200, "{moved}");
        assert_eq!(moved["state"], "In progress");
        assert_eq!(moved["state_category"], "in_progress");
        assert_eq!(moved["version"], 2);
        let (_, page) = s
            .admin(Method::GET, &format!("{ITEMS}?state=in%20progress"), None)
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);

        let (st, wf) = s
            .admin(Method::GET, "/api/v1/projects/demo/workflows", None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(wf["types"].as_array().unwrap().len(), 7);
        let names: Vec<&str> = wf["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["incident", "standard"]);
        s.stop().await;
    }
}

#[tokio::test]
async fn items_invalid_transition_lists_allowed_states() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        create(&s, json!({"type": "task", "title": "Ship it"})).await;
        let url = format!("{ITEMS}/DEMO-1/transitions");
        let go = |to: &str| s.admin(Method::POST, &url, Some(json!({ "to": to })));
        assert_eq!(go("Done").await.0, 200);
        let (st, body) = go("In progress").await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (422, "item.invalid_transition")
        );
        assert_eq!(body["error"]["details"]["allowed"], json!(["Ready"]));
        assert_eq!(body["error"]["details"]["from"], "Done");
        let (st, body) = go("Nowhere").await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (422, "item.invalid_transition")
        );
        assert_eq!(go("Ready").await.0, 200);
        let (st, body) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/DEMO-9/transitions"),
                Some(json!({"to": "Done"})),
            )
            .await;
        assert_eq!((st, error_code(&body).as_str()), (404, "item.not_found"));

        let inc = create(&s, json!({"type": "incident", "title": "Down"})).await;
        assert_eq!(inc["state"], "Open");
        s.stop().await;
    }
}

#[tokio::test]
async fn items_stale_update_is_a_conflict() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        create(
            &s,
            json!({"type": "story", "title": "Old", "labels": ["ui"]}),
        )
        .await;
        let url = format!("{ITEMS}/DEMO-1");
        let (st, item) = s
            .admin(
                Method::PATCH,
                &url,
                Some(json!({"title": "New", "assignee": "admin", "estimate": 3,
                            "priority": "high", "due_at": "2030-01-31", "version": 1})),
            )
            .await;
        assert_eq!(st, 200, "{item}");
        assert_eq!(
            (
                &item["title"],
                &item["assignee"],
                &item["estimate"],
                &item["version"]
            ),
            (&json!("New"), &json!("admin"), &json!(3), &json!(2))
        );
        assert_eq!(item["due_at"], "2030-01-31T00:00:00Z");
        let (st, body) = s
            .admin(
                Method::PATCH,
                &url,
                Some(json!({"title": "Lost", "version": 1})),
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (409, "conflict.stale_version")
        );
        assert_eq!(body["error"]["details"]["current_version"], 2);
        // null clears a field; absent leaves it.
        let (st, item) = s
            .admin(
                Method::PATCH,
                &url,
                Some(json!({"assignee": null, "version": 2})),
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(
            (&item["assignee"], &item["estimate"]),
            (&Value::Null, &json!(3))
        );

        // Bad input is a 4xx, never a 500.
        for (body, code) in [
            (json!({"title": ""}), "request.validation_failed"),
            (
                json!({"title": "x".repeat(301)}),
                "request.validation_failed",
            ),
            (json!({"estimate": -1}), "request.validation_failed"),
            (json!({"due_at": "soon"}), "request.validation_failed"),
            (json!({"assignee": "nobody"}), "request.validation_failed"),
            (json!({"parent": "DEMO-1"}), "request.validation_failed"),
            (json!({"labels": ["a b"]}), "request.validation_failed"),
            (json!({"colour": "red"}), "request.invalid_body"),
            (json!({"priority": "urgent"}), "request.invalid_body"),
        ] {
            let (st, resp) = s.admin(Method::PATCH, &url, Some(body.clone())).await;
            assert!((400..500).contains(&st), "{body}: {st}");
            assert_eq!(error_code(&resp), code, "{body}");
        }
        for body in [
            json!({"type": "story"}),
            json!({"type": "saga", "title": "x"}),
            json!({"type": "task", "title": "x", "parent": "DEMO-404"}),
        ] {
            let (st, resp) = s.admin(Method::POST, ITEMS, Some(body.clone())).await;
            assert_eq!(st, 422, "{body}: {resp}");
        }
        let (st, _) = s
            .admin(Method::GET, &format!("{ITEMS}?cursor=x"), None)
            .await;
        assert_eq!(st, 400);
        // NUL cannot be stored on PostgreSQL: refused or matched against nothing, never a 500.
        let (st, _) = s
            .admin(
                Method::POST,
                ITEMS,
                Some(json!({"type": "task", "title": "a\0b"})),
            )
            .await;
        assert_eq!(st, 422);
        let (st, _) = s
            .admin(
                Method::PATCH,
                &url,
                Some(json!({"description": "\0", "assignee": "\0"})),
            )
            .await;
        assert_eq!(st, 422);
        let (st, _) = s.admin(Method::GET, &format!("{ITEMS}/%00"), None).await;
        assert_eq!(st, 404);
        let (st, page) = s
            .admin(Method::GET, &format!("{ITEMS}?q=%00&label=%00"), None)
            .await;
        assert_eq!((st, &page["items"]), (200, &json!([])));
        // Each term is one SQL condition; the bound keeps statements within SQLite's limits.
        let (st, _) = s
            .admin(
                Method::GET,
                &format!("{ITEMS}?q={}", "w+".repeat(100)),
                None,
            )
            .await;
        assert_eq!(st, 200);
        let many = "w+".repeat(2000);
        let (st, e) = s
            .admin(Method::GET, &format!("{ITEMS}?q={many}"), None)
            .await;
        assert_eq!(
            (st, &e["error"]["details"]["reason"]),
            (400, &json!("query.too_many_terms"))
        );
        let many = "w+".repeat(5000);
        let (st, e) = s
            .admin(Method::GET, &format!("{ITEMS}?q={many}"), None)
            .await;
        assert_eq!(
            (st, &e["error"]["details"]["reason"]),
            (400, &json!("query.too_long"))
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn items_comments_watchers_and_history() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let bob = s.user("bob").await;
        s.admin(
            Method::PUT,
            "/api/v1/projects/demo/members/bob",
            Some(json!({"role": "developer"})),
        )
        .await;
        create(&s, json!({"type": "story", "title": "Talk"})).await;
        let url = format!("{ITEMS}/DEMO-1");
        let (st, c) = s
            .call(
                Method::POST,
                &format!("{url}/comments"),
                Some(&bob),
                Some(json!({"body": "Looks **good**"})),
            )
            .await;
        assert_eq!(st, 201, "{c}");
        assert_eq!(
            (&c["author"], &c["body"]),
            (&json!("bob"), &json!("Looks **good**"))
        );
        let (st, body) = s
            .call(
                Method::POST,
                &format!("{url}/comments"),
                Some(&bob),
                Some(json!({"body": "  "})),
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (422, "request.validation_failed")
        );
        let (_, list) = s.admin(Method::GET, &format!("{url}/comments"), None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        // The reporter and the commenter watch; bob can stop and start again.
        let (_, w) = s.admin(Method::GET, &format!("{url}/watchers"), None).await;
        assert_eq!(w["watchers"], json!(["admin", "bob"]));
        let (st, w) = s
            .call(
                Method::DELETE,
                &format!("{url}/watchers/me"),
                Some(&bob),
                None,
            )
            .await;
        assert_eq!((st, &w["watching"]), (200, &json!(false)));
        let (_, w) = s
            .call(Method::PUT, &format!("{url}/watchers/me"), Some(&bob), None)
            .await;
        assert_eq!(w["watchers"], json!(["admin", "bob"]));

        s.call(
            Method::PATCH,
            &url,
            Some(&bob),
            Some(json!({"assignee": "bob"})),
        )
        .await;
        s.call(
            Method::POST,
            &format!("{url}/transitions"),
            Some(&bob),
            Some(json!({"to": "Ready"})),
        )
        .await;
        let (st, h) = s.admin(Method::GET, &format!("{url}/history"), None).await;
        assert_eq!(st, 200, "{h}");
        let kinds: Vec<&str> = h
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "item.created",
                "item.commented",
                "item.updated",
                "item.transitioned"
            ]
        );
        let h = h.as_array().unwrap();
        assert_eq!(h[0]["payload"]["key"], "DEMO-1");
        assert_eq!(h[2]["actor"], "user:bob");
        assert_eq!(
            h[2]["payload"]["changes"]["assignee"],
            json!({"old": null, "new": "bob"})
        );
        assert_eq!(h[3]["payload"]["from"], "New");
        assert_eq!(h[3]["payload"]["to"], "Ready");
        s.stop().await;
    }
}

#[tokio::test]
async fn items_permissions_and_parallel_creates() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let viewer = s.user("vera").await;
        let outsider = s.user("otto").await;
        s.admin(
            Method::PUT,
            "/api/v1/projects/demo/members/vera",
            Some(json!({"role": "viewer"})),
        )
        .await;
        create(&s, json!({"type": "story", "title": "Secret plans"})).await;
        let (st, body) = s
            .call(
                Method::GET,
                &format!("{ITEMS}/DEMO-1"),
                Some(&outsider),
                None,
            )
            .await;
        assert_eq!((st, error_code(&body).as_str()), (404, "project.not_found"));
        let (st, _) = s
            .call(Method::GET, &format!("{ITEMS}/DEMO-1"), Some(&viewer), None)
            .await;
        assert_eq!(st, 200);
        let (st, body) = s
            .call(
                Method::POST,
                ITEMS,
                Some(&viewer),
                Some(json!({"type": "story", "title": "x"})),
            )
            .await;
        assert_eq!((st, error_code(&body).as_str()), (403, "auth.forbidden"));
        let (st, _) = s
            .call(
                Method::POST,
                &format!("{ITEMS}/DEMO-1/transitions"),
                Some(&viewer),
                Some(json!({"to": "Ready"})),
            )
            .await;
        assert_eq!(st, 403);

        // Concurrent creates get distinct, consecutive keys.
        let mut calls = Vec::new();
        for i in 0..10 {
            calls.push(s.admin(
                Method::POST,
                ITEMS,
                Some(json!({"type": "task", "title": format!("t{i}")})),
            ));
        }
        let mut keys: Vec<i64> = Vec::new();
        for (st, body) in futures::future::join_all(calls).await {
            assert_eq!(st, 201, "{body}");
            keys.push(body["number"].as_i64().unwrap());
        }
        keys.sort();
        assert_eq!(keys, (2..=11).collect::<Vec<_>>());
        s.stop().await;
    }
}

#[tokio::test]
async fn items_query_rank_and_bulk_over_http() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        create(
            &s,
            json!({"type": "story", "title": "Pay by card", "assignee": "admin"}),
        )
        .await;
        create(
            &s,
            json!({"type": "bug", "title": "Refund fails", "labels": ["Pay"]}),
        )
        .await;
        create(&s, json!({"type": "task", "title": "Docs", "estimate": 2})).await;
        let keys = |page: &Value| -> Vec<String> {
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["key"].as_str().unwrap().to_string())
                .collect()
        };
        for (q, want) in [
            ("assignee%3Ame", vec!["DEMO-1"]),
            ("label%3Apay", vec!["DEMO-2"]),
            ("-type%3Abug%20sort%3A-estimate", vec!["DEMO-3", "DEMO-1"]),
            ("state%3A%22New%22", vec!["DEMO-1", "DEMO-2", "DEMO-3"]),
            ("%22'%20OR%201%3D1%20--%22", vec![]),
        ] {
            let (st, page) = s.admin(Method::GET, &format!("{ITEMS}?q={q}"), None).await;
            assert_eq!(st, 200, "{q}: {page}");
            assert_eq!(keys(&page), want, "{}: {q}", db.name());
        }
        let (st, e) = s
            .admin(
                Method::GET,
                &format!("{ITEMS}?q=type%3Abug%20prio%3Ahigh"),
                None,
            )
            .await;
        assert_eq!(st, 400, "{e}");
        assert_eq!(e["error"]["code"], "item.invalid_query");
        let d = &e["error"]["details"];
        assert_eq!(d["position"], 9);
        assert_eq!(d["reason"], "query.unknown_field");
        assert_eq!(d["caret"], "type:bug prio:high\n         ^");
        assert!(d["expected"].as_str().unwrap().contains("priority"), "{d}");

        let rank = |key: &str, body: Value| {
            let url = format!("{ITEMS}/{key}/rank");
            let s = &s;
            async move { s.admin(Method::POST, &url, Some(body)).await }
        };
        let (st, moved) = rank("DEMO-3", json!({"before": "DEMO-1"})).await;
        assert_eq!(st, 200, "{moved}");
        let (st, _) = rank("DEMO-1", json!({"after": "DEMO-2"})).await;
        assert_eq!(st, 200);
        let (_, page) = s.admin(Method::GET, ITEMS, None).await;
        assert_eq!(keys(&page), ["DEMO-3", "DEMO-2", "DEMO-1"], "{}", db.name());
        let (st, e) = rank("DEMO-1", json!({"after": "DEMO-99"})).await;
        assert_eq!((st, &e["error"]["code"]), (404, &json!("item.not_found")));
        let (st, _) = rank("DEMO-1", json!({"after": "DEMO-2", "before": "DEMO-3"})).await;
        assert_eq!(st, 422);
        let (st, _) = rank("DEMO-1", json!({})).await;
        assert_eq!(st, 422);
        let (st, _) = rank("DEMO-99", json!({"after": "DEMO-2"})).await;
        assert_eq!(st, 404);

        let bulk = format!("{ITEMS}/bulk");
        let (st, done) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/DEMO-2/transitions"),
                Some(json!({"to": "Done"})),
            )
            .await;
        assert_eq!(st, 200, "{done}");
        let (st, e) = s
            .admin(
                Method::POST,
                &bulk,
                Some(json!({"keys": ["DEMO-1", "DEMO-2"], "set": {"state": "In progress"}})),
            )
            .await;
        assert_eq!(st, 422, "{e}");
        assert_eq!(e["error"]["details"]["items"][0]["key"], "DEMO-2");
        let (_, one) = s.admin(Method::GET, &format!("{ITEMS}/DEMO-1"), None).await;
        assert_eq!(one["state"], "New");
        let (st, out) = s
            .admin(
                Method::POST,
                &bulk,
                Some(json!({"keys": ["DEMO-1", "DEMO-3"],
                            "set": {"state": "In progress", "assignee": null, "add_labels": ["x"]}})),
            )
            .await;
        assert_eq!(st, 200, "{out}");
        assert_eq!(out[0]["state"], "In progress");
        assert_eq!(out[0]["assignee"], Value::Null);
        assert_eq!(out[1]["labels"], json!(["x"]));
        let (st, _) = s
            .admin(Method::POST, &bulk, Some(json!({"keys": [], "set": {}})))
            .await;
        assert_eq!(st, 422);
        s.stop().await;
    }
}
