//! Plan settings over HTTP: item types (add, rename, disable) and workflow editing (states,
//! categories, transitions), their effect on existing items, events and permissions.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const ITEMS: &str = "/api/v1/projects/demo/items";
const TYPES: &str = "/api/v1/projects/demo/types";
const STD: &str = "/api/v1/projects/demo/workflows/standard";

async fn with_demo(s: &TestServer) {
    s.demo_project().await;
}

async fn create(s: &TestServer, body: Value) -> Value {
    let (st, item) = s.admin(Method::POST, ITEMS, Some(body)).await;
    assert_eq!(st, 201, "{item}");
    item
}

async fn item(s: &TestServer, key: &str) -> Value {
    let (st, item) = s.admin(Method::GET, &format!("{ITEMS}/{key}"), None).await;
    assert_eq!(st, 200, "{item}");
    item
}

async fn config_events(s: &TestServer) -> Vec<Value> {
    let (st, ev) = s
        .admin(
            Method::GET,
            "/api/v1/events?kind=plan.config_changed&limit=500",
            None,
        )
        .await;
    assert_eq!(st, 200, "{ev}");
    ev["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn plan_config_types_rename_add_disable() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        create(&s, json!({"type": "story", "title": "One"})).await;
        create(&s, json!({"type": "story", "title": "Two"})).await;

        // Rename: existing items follow in the same transaction.
        let (st, t) = s
            .admin(
                Method::PATCH,
                &format!("{TYPES}/story"),
                Some(json!({"name": "User story"})),
            )
            .await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["name"], "User story");
        assert_eq!(t["kind"], "story");
        assert_eq!(item(&s, "DEMO-1").await["type"], "User story");
        assert_eq!(item(&s, "DEMO-2").await["type"], "User story");
        let (st, e) = s
            .admin(
                Method::POST,
                ITEMS,
                Some(json!({"type": "story", "title": "x"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (422, "request.validation_failed")
        );
        create(&s, json!({"type": "User story", "title": "Three"})).await;
        // Renaming onto another type's name is a conflict; unknown types are 404.
        let (st, e) = s
            .admin(
                Method::PATCH,
                &format!("{TYPES}/task"),
                Some(json!({"name": "bug"})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "plan.type_exists"));
        let (st, e) = s
            .admin(
                Method::PATCH,
                &format!("{TYPES}/nope"),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (404, "plan.type_not_found"));

        // Disable: new items of the type are refused with a field error, old ones stay.
        let (st, t) = s
            .admin(
                Method::PATCH,
                &format!("{TYPES}/User%20story"),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["enabled"], false);
        let (st, e) = s
            .admin(
                Method::POST,
                ITEMS,
                Some(json!({"type": "User story", "title": "Four"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (422, "request.validation_failed")
        );
        assert_eq!(e["error"]["details"]["field"], "type");
        assert_eq!(item(&s, "DEMO-3").await["type"], "User story");

        // Add: a new type on the incident workflow starts in its first state.
        let (st, t) = s
            .admin(
                Method::POST,
                TYPES,
                Some(json!({"name": "Outage", "kind": "incident", "workflow": "incident"})),
            )
            .await;
        assert_eq!(st, 201, "{t}");
        assert_eq!(t["workflow"], "incident");
        let o = create(&s, json!({"type": "Outage", "title": "Down"})).await;
        assert_eq!(o["state"], "Open");
        let (st, e) = s
            .admin(
                Method::POST,
                TYPES,
                Some(json!({"name": "Ghost", "kind": "task", "workflow": "nowhere"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (422, "request.validation_failed")
        );
        assert_eq!(e["error"]["details"]["field"], "workflow");
        let (st, e) = s
            .admin(
                Method::POST,
                TYPES,
                Some(json!({"name": " ", "kind": "task"})),
            )
            .await;
        assert_eq!(
            (st, e["error"]["details"]["field"].as_str()),
            (422, Some("name"))
        );
        let (st, e) = s
            .admin(
                Method::POST,
                TYPES,
                Some(json!({"name": "bug", "kind": "bug"})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "plan.type_exists"));

        let (st, list) = s.admin(Method::GET, TYPES, None).await;
        assert_eq!(st, 200);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"User story") && names.contains(&"Outage"));
        assert!(!names.contains(&"story"));

        let evs = config_events(&s).await;
        let whats: Vec<&str> = evs
            .iter()
            .map(|e| e["payload"]["what"].as_str().unwrap())
            .collect();
        assert_eq!(whats, ["type_changed", "type_changed", "type_added"]);
        assert_eq!(evs[0]["payload"]["from"]["name"], "story");
        assert_eq!(evs[0]["payload"]["items_renamed"], 2);
        s.stop().await;
    }
}

#[tokio::test]
async fn plan_config_states_and_transitions() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        create(&s, json!({"type": "task", "title": "One"})).await;
        let bug = create(&s, json!({"type": "bug", "title": "Two"})).await;
        let inc = create(&s, json!({"type": "incident", "title": "Three"})).await;
        assert_eq!(inc["state"], "Open");

        // Add a state; duplicates are a conflict.
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{STD}/states"),
                Some(json!({"name": "Blocked", "category": "in_progress"})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        assert_eq!(b["category"], "in_progress");
        let (st, e) = s
            .admin(
                Method::POST,
                &format!("{STD}/states"),
                Some(json!({"name": "Blocked", "category": "todo"})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "plan.state_exists"));

        // Rename "New": items of the standard workflow follow, other workflows do not.
        let (st, r) = s
            .admin(
                Method::PATCH,
                &format!("{STD}/states/New"),
                Some(json!({"name": "Triage"})),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(item(&s, "DEMO-1").await["state"], "Triage");
        assert_eq!(item(&s, "DEMO-2").await["state"], "Triage");
        assert_eq!(item(&s, "DEMO-3").await["state"], "Open");
        // Transitions followed the rename.
        let (st, moved) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/DEMO-1/transitions"),
                Some(json!({"to": "Ready"})),
            )
            .await;
        assert_eq!(st, 200, "{moved}");

        // Category change: items in the state are re-categorised.
        let (st, r) = s
            .admin(
                Method::PATCH,
                &format!("{STD}/states/Triage"),
                Some(json!({"category": "in_progress"})),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["category"], "in_progress");
        let two = item(&s, "DEMO-2").await;
        assert_eq!(two["state_category"], "in_progress");
        assert_eq!(two["version"], bug["version"]);
        assert_eq!(item(&s, "DEMO-1").await["state_category"], "todo");

        // Delete is refused while items are in the state, allowed once it is empty.
        let (st, e) = s
            .admin(Method::DELETE, &format!("{STD}/states/Triage"), None)
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "plan.state_in_use"));
        assert_eq!(e["error"]["details"]["items"], 1);
        let (st, _) = s
            .admin(Method::DELETE, &format!("{STD}/states/Blocked"), None)
            .await;
        assert_eq!(st, 204);
        let (st, e) = s
            .admin(Method::DELETE, &format!("{STD}/states/Blocked"), None)
            .await;
        assert_eq!((st, error_code(&e).as_str()), (404, "plan.state_not_found"));

        // Replace all transitions; an old move is refused afterwards.
        let url = format!("{STD}/transitions");
        let (st, w) = s
            .admin(
                Method::PUT,
                &url,
                Some(json!({"transitions": [
                    {"from": "Triage", "to": "Ready"},
                    {"from": "Ready", "to": "In progress"},
                    {"from": "In progress", "to": "Done"},
                ]})),
            )
            .await;
        assert_eq!(st, 200, "{w}");
        let std = w["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "standard")
            .unwrap();
        assert_eq!(std["transitions"].as_array().unwrap().len(), 3);
        let (st, e) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/DEMO-1/transitions"),
                Some(json!({"to": "Done"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (422, "item.invalid_transition")
        );
        assert_eq!(e["error"]["details"]["allowed"], json!(["In progress"]));
        // Unknown names and self-moves are field errors.
        let (st, e) = s
            .admin(
                Method::PUT,
                &url,
                Some(json!({"transitions": [{"from": "Ready", "to": "Nowhere"}]})),
            )
            .await;
        assert_eq!(st, 422);
        assert_eq!(e["error"]["details"]["field"], "transitions[0].to");
        let (st, e) = s
            .admin(
                Method::PUT,
                &url,
                Some(json!({"transitions": [{"from": "Ready", "to": "Ready"}]})),
            )
            .await;
        assert_eq!(st, 422, "{e}");
        let (st, e) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/workflows/nope/transitions",
                Some(json!({"transitions": []})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (404, "plan.state_not_found"));

        let evs = config_events(&s).await;
        let whats: Vec<&str> = evs
            .iter()
            .map(|e| e["payload"]["what"].as_str().unwrap())
            .collect();
        assert_eq!(
            whats,
            [
                "state_added",
                "state_changed",
                "state_changed",
                "state_deleted",
                "transitions_replaced"
            ]
        );
        assert_eq!(evs[2]["payload"]["to"]["category"], "in_progress");
        s.stop().await;
    }
}

#[tokio::test]
async fn plan_config_needs_a_maintainer() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let dev = s.user("dev").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/dev",
                Some(json!({"role": "developer"})),
            )
            .await;
        assert_eq!(st, 200);
        let (st, list) = s.call(Method::GET, TYPES, Some(&dev), None).await;
        assert_eq!(st, 200, "{list}");
        assert!(!list.as_array().unwrap().is_empty());
        let (st, _) = s
            .call(
                Method::PATCH,
                &format!("{TYPES}/bug"),
                Some(&dev),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(st, 403);
        let (st, _) = s
            .call(
                Method::PUT,
                &format!("{STD}/transitions"),
                Some(&dev),
                Some(json!({"transitions": []})),
            )
            .await;
        assert_eq!(st, 403);
        let (st, _) = s
            .call(
                Method::DELETE,
                &format!("{STD}/states/New"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(st, 403);
        assert!(config_events(&s).await.is_empty());
        s.stop().await;
    }
}

/// Hostile type names, state names, titles and labels reach the backlog and item pages only
/// escaped.
#[tokio::test]
async fn plan_config_hostile_names_are_escaped_on_pages() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let script = "<script>alert(1)</script>";
        let img = "\"><img src=x onerror=alert(1)>";
        let js = "javascript:alert(1)";
        let (st, t) = s
            .admin(
                Method::PATCH,
                &format!("{TYPES}/story"),
                Some(json!({ "name": script })),
            )
            .await;
        assert_eq!(st, 200, "{t}");
        let (st, r) = s
            .admin(
                Method::PATCH,
                &format!("{STD}/states/New"),
                Some(json!({ "name": img })),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        for f in [
            json!({"name": "notes", "label": script, "type": "text"}),
            json!({"name": "env", "label": js, "type": "select", "options": [img, js]}),
        ] {
            let (st, b) = s.admin(Method::POST, FIELDS, Some(f)).await;
            assert_eq!(st, 201, "{b}");
        }
        let it = create(
            &s,
            json!({"type": script, "title": img, "labels": [script, js],
                   "fields": {"notes": script, "env": img}}),
        )
        .await;
        assert_eq!(it["state"], img);
        assert_eq!(it["fields"]["env"], img);
        for path in ["/projects/demo/plan", "/projects/demo/plan/items/DEMO-1"] {
            let res = s
                .req(Method::GET, path, Some(&s.admin_token))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 200, "{path}");
            let body = res.text().await.unwrap();
            assert!(!body.contains(script), "{path}: raw script");
            assert!(!body.contains("<img src=x"), "{path}: raw img");
            assert!(!body.contains("onerror=alert(1)>"), "{path}: raw handler");
            assert!(!body.contains("href=\"javascript"), "{path}: js link");
            assert!(
                body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
                "{path}: escaped type/label"
            );
            assert!(
                body.contains("&#34;&#62;&#60;img src=x onerror=alert(1)&#62;"),
                "{path}: escaped title/state"
            );
        }
        // The item page shows the custom fields: labels and values, escaped.
        let res = s
            .req(
                Method::GET,
                "/projects/demo/plan/items/DEMO-1",
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        let body = res.text().await.unwrap();
        assert!(
            body.contains(
                "<dt class=\"custom-field\">&#60;script&#62;alert(1)&#60;/script&#62;</dt>"
            ),
            "field label escaped"
        );
        assert!(
            body.contains("<dd>&#34;&#62;&#60;img src=x onerror=alert(1)&#62;</dd>"),
            "select value escaped"
        );
        assert!(body.contains("<dt class=\"custom-field\">javascript:alert(1)</dt>"));
        s.stop().await;
    }
}

const FIELDS: &str = "/api/v1/projects/demo/fields";

#[tokio::test]
async fn plan_config_custom_fields() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        with_demo(&s).await;
        let dev = s.user("dev").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/dev",
                Some(json!({"role": "developer"})),
            )
            .await;
        assert_eq!(st, 200);
        s.user("outsider").await;
        for f in [
            json!({"name": "notes", "type": "text"}),
            json!({"name": "cost", "label": "Cost (EUR)", "type": "number"}),
            json!({"name": "env", "type": "select", "options": ["prod", "staging"]}),
            json!({"name": "qa", "type": "user"}),
            json!({"name": "found", "type": "date"}),
        ] {
            let (st, b) = s.admin(Method::POST, FIELDS, Some(f)).await;
            assert_eq!(st, 201, "{b}");
        }
        // Definition errors.
        for (body, status, field) in [
            (json!({"name": "Bad Name", "type": "text"}), 422, "name"),
            (json!({"name": "sev", "type": "select"}), 422, "options"),
            (
                json!({"name": "x", "type": "text", "options": ["a"]}),
                422,
                "options",
            ),
        ] {
            let (st, e) = s.admin(Method::POST, FIELDS, Some(body.clone())).await;
            assert_eq!(
                (st, e["error"]["details"]["field"].as_str()),
                (status, Some(field)),
                "{body}"
            );
        }
        let (st, e) = s
            .admin(
                Method::POST,
                FIELDS,
                Some(json!({"name": "env", "type": "text"})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "plan.field_exists"));
        let (st, _) = s
            .call(
                Method::POST,
                FIELDS,
                Some(&dev),
                Some(json!({"name": "y", "type": "text"})),
            )
            .await;
        assert_eq!(st, 403);
        let (st, list) = s.call(Method::GET, FIELDS, Some(&dev), None).await;
        assert_eq!(st, 200);
        assert_eq!(list.as_array().unwrap().len(), 5);
        assert_eq!(list[1]["label"], "Cost (EUR)");
        assert_eq!(list[2]["options"], json!(["prod", "staging"]));

        // Values round trip on create and read.
        let it = create(
            &s,
            json!({"type": "bug", "title": "Crash", "fields": {
                "notes": "seen twice", "cost": 12.5, "env": "prod", "qa": "dev", "found": "2026-11-01"
            }}),
        )
        .await;
        assert_eq!(
            it["fields"],
            json!({"notes": "seen twice", "cost": "12.5", "env": "prod", "qa": "dev", "found": "2026-11-01"})
        );
        assert_eq!(item(&s, "DEMO-1").await["fields"], it["fields"]);
        let (_, page) = s.admin(Method::GET, ITEMS, None).await;
        assert_eq!(page["items"][0]["fields"]["env"], "prod");

        // Validation per type, as field errors named fields.<name>.
        for (k, v) in [
            ("cost", json!("lots")),
            ("env", json!("dev")),
            ("qa", json!("outsider")),
            ("qa", json!("nobody")),
            ("found", json!("yesterday")),
            ("nope", json!("x")),
            ("notes", json!(["a"])),
        ] {
            let (st, e) = s
                .admin(
                    Method::POST,
                    ITEMS,
                    Some(json!({"type": "bug", "title": "x", "fields": {k: v.clone()}})),
                )
                .await;
            assert_eq!(st, 422, "{k}={v}: {e}");
            assert_eq!(
                e["error"]["details"]["field"],
                format!("fields.{k}"),
                "{k}={v}"
            );
        }

        // Patch: set, clear, and history records it; a stale version is 409.
        let v = it["version"].as_i64().unwrap();
        let (st, up) = s
            .admin(
                Method::PATCH,
                &format!("{ITEMS}/DEMO-1"),
                Some(json!({"fields": {"env": "staging", "notes": null}, "version": v})),
            )
            .await;
        assert_eq!(st, 200, "{up}");
        assert_eq!(up["fields"]["env"], "staging");
        assert!(up["fields"].get("notes").is_none());
        assert_eq!(up["fields"]["cost"], "12.5");
        let (st, e) = s
            .admin(
                Method::PATCH,
                &format!("{ITEMS}/DEMO-1"),
                Some(json!({"fields": {"env": "prod"}, "version": v})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (409, "conflict.stale_version")
        );
        let (st, e) = s
            .admin(
                Method::PATCH,
                &format!("{ITEMS}/DEMO-1"),
                Some(json!({"fields": {"env": "qa"}})),
            )
            .await;
        assert_eq!(
            (st, e["error"]["details"]["field"].as_str()),
            (422, Some("fields.env"))
        );
        let (st, h) = s
            .admin(Method::GET, &format!("{ITEMS}/DEMO-1/history"), None)
            .await;
        assert_eq!(st, 200, "{h}");
        let upd = h
            .as_array()
            .or_else(|| h["items"].as_array())
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "item.updated")
            .cloned()
            .expect("an item.updated in history");
        assert_eq!(
            upd["payload"]["changes"]["fields.env"],
            json!({"old": "prod", "new": "staging"})
        );
        assert_eq!(
            upd["payload"]["changes"]["fields.notes"],
            json!({"old": "seen twice", "new": null})
        );

        // Options change, label change; delete removes values.
        let (st, f) = s
            .admin(
                Method::PATCH,
                &format!("{FIELDS}/env"),
                Some(json!({"label": "Environment", "options": ["prod", "staging", "qa"]})),
            )
            .await;
        assert_eq!(st, 200, "{f}");
        assert_eq!(f["label"], "Environment");
        let (st, _) = s
            .admin(
                Method::PATCH,
                &format!("{ITEMS}/DEMO-1"),
                Some(json!({"fields": {"env": "qa"}})),
            )
            .await;
        assert_eq!(st, 200);
        let (st, _) = s
            .admin(Method::DELETE, &format!("{FIELDS}/env"), None)
            .await;
        assert_eq!(st, 204);
        assert!(item(&s, "DEMO-1").await["fields"].get("env").is_none());
        let (st, e) = s
            .admin(Method::DELETE, &format!("{FIELDS}/env"), None)
            .await;
        assert_eq!((st, error_code(&e).as_str()), (404, "plan.field_not_found"));
        s.stop().await;
    }
}
