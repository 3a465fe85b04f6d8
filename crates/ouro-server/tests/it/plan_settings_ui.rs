//! The Plan settings page (types, workflows and the transitions matrix, custom fields, WIP
//! limits) and the custom field inputs of the item forms, driven through the HTML forms and
//! checked through the JSON API.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const SETTINGS: &str = "/projects/demo/plan/settings";

async fn workflows(s: &TestServer) -> Value {
    let (st, w) = s
        .admin(Method::GET, "/api/v1/projects/demo/workflows", None)
        .await;
    assert_eq!(st, 200, "{w}");
    w
}

fn standard(w: &Value) -> &Value {
    w["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "standard")
        .expect("the standard workflow")
}

async fn item(s: &TestServer, key: &str) -> Value {
    let (st, it) = s
        .admin(
            Method::GET,
            &format!("/api/v1/projects/demo/items/{key}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{it}");
    it
}

async fn config_events(s: &TestServer) -> usize {
    let (st, ev) = s
        .admin(
            Method::GET,
            "/api/v1/events?kind=plan.config_changed&limit=500",
            None,
        )
        .await;
    assert_eq!(st, 200, "{ev}");
    ev["items"].as_array().unwrap().len()
}

/// POSTs a settings form and expects the redirect back to the page.
async fn post_ok(s: &TestServer, path: &str, fields: &[(&str, &str)]) {
    let (st, loc, body) = s.admin_form(path, form_body(fields)).await;
    assert_eq!(st, 303, "{path}: {body}");
    assert!(loc.starts_with(SETTINGS), "{loc}");
}

#[tokio::test]
async fn plan_settings_ui_types_states_fields_and_matrix() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, page) = s.admin_page(SETTINGS).await;
        assert_eq!(st, 200, "{page}");
        assert!(page.contains("id=\"add-type-form\""), "{page}");
        assert!(page.contains(">Settings</a>"));
        let before = config_events(&s).await;

        // Types: add, rename, disable.
        post_ok(
            &s,
            &format!("{SETTINGS}/types"),
            &[
                ("name", "Spike"),
                ("kind", "task"),
                ("workflow", "standard"),
            ],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/types/rename"),
            &[("type", "Spike"), ("name", "Research")],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/types/toggle"),
            &[("type", "bug"), ("enabled", "false")],
        )
        .await;
        let w = workflows(&s).await;
        let types = w["types"].as_array().unwrap();
        let research = types.iter().find(|t| t["name"] == "Research").unwrap();
        assert_eq!(research["kind"], "task");
        assert!(!types.iter().any(|t| t["name"] == "Spike"));
        let bug = types.iter().find(|t| t["name"] == "bug").unwrap();
        assert_eq!(bug["enabled"], false);
        // A duplicate name is refused on the page, with the name kept in the form.
        let (st, _, body) = s
            .admin_form(
                &format!("{SETTINGS}/types"),
                form_body(&[("name", "Research"), ("kind", "task")]),
            )
            .await;
        assert_eq!(st, 409, "{body}");
        assert!(body.contains("id=\"types-error\""), "{body}");
        assert!(body.contains("already exists"), "{body}");
        assert!(!body.contains("\"error\":"), "no JSON dump: {body}");

        // States: add, rename and re-categorise.
        post_ok(
            &s,
            &format!("{SETTINGS}/states"),
            &[
                ("workflow", "standard"),
                ("name", "Testing"),
                ("category", "in_progress"),
            ],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/states/update"),
            &[
                ("workflow", "standard"),
                ("state", "Testing"),
                ("name", "QA"),
                ("category", "done"),
            ],
        )
        .await;
        let w = workflows(&s).await;
        let qa = standard(&w)["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "QA")
            .cloned()
            .expect("QA state");
        assert_eq!(qa["category"], "done");

        // A new workflow with its first state, then a type following it.
        post_ok(
            &s,
            &format!("{SETTINGS}/states"),
            &[
                ("new_workflow", "true"),
                ("workflow", "Support"),
                ("name", "Waiting"),
                ("category", "todo"),
            ],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/types"),
            &[
                ("name", "Ticket"),
                ("kind", "task"),
                ("workflow", "Support"),
            ],
        )
        .await;
        let (_, page) = s.admin_page(SETTINGS).await;
        assert!(page.contains("id=\"wf-support\""), "{page}");
        let wf = workflows(&s).await;
        let ticket = wf["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "Ticket")
            .cloned()
            .unwrap();
        assert_eq!(ticket["workflow"], "Support");
        // A refusal on that form shows next to it, the name kept.
        let (st, _, body) = s
            .admin_form(
                &format!("{SETTINGS}/states"),
                form_body(&[
                    ("new_workflow", "true"),
                    ("workflow", "Ops"),
                    ("name", ""),
                    ("category", "todo"),
                ]),
            )
            .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("id=\"new-workflow-error\""), "{body}");
        assert!(body.contains("value=\"Ops\""), "{body}");

        // The matrix: the page shows one checkbox per ordered pair of distinct states, and a
        // submit replaces all transitions with the checked ones.
        let (_, page) = s.admin_page(SETTINGS).await;
        let names: Vec<String> = standard(&w)["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            ["New", "Ready", "In progress", "In review", "Done", "QA"]
        );
        assert!(page.contains("aria-label=\"From New to Ready\""), "{page}");
        assert!(!page.contains("aria-label=\"From New to New\""));
        let mut f: Vec<(String, String)> = vec![("workflow".into(), "standard".into())];
        for (i, n) in names.iter().enumerate() {
            f.push((format!("s.{i}"), n.clone()));
        }
        // New -> Ready, Ready -> QA, QA -> Done.
        for (a, b) in [(0, 1), (1, 5), (5, 4)] {
            f.push((format!("t.{a}.{b}"), "on".into()));
        }
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        post_ok(&s, &format!("{SETTINGS}/transitions"), &refs).await;
        let w = workflows(&s).await;
        let mut got: Vec<(String, String)> = standard(&w)["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["from"].as_str().unwrap().to_string(),
                    t["to"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("New".to_string(), "Ready".to_string()),
                ("QA".into(), "Done".into()),
                ("Ready".into(), "QA".into()),
            ]
        );
        let (_, page) = s.admin_page(SETTINGS).await;
        assert!(
            page.contains("aria-label=\"From New to Ready\" checked"),
            "{page}"
        );
        assert!(!page.contains("aria-label=\"From New to Done\" checked"));

        // Custom fields: add a select with comma separated options, change its label and
        // options (one per line), add and delete another.
        post_ok(
            &s,
            &format!("{SETTINGS}/fields"),
            &[
                ("name", "team"),
                ("label", "Team"),
                ("type", "select"),
                ("options", "red, blue"),
            ],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/fields/update"),
            &[
                ("field", "team"),
                ("label", "Squad"),
                ("options", "red\nblue\ngreen"),
            ],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/fields"),
            &[("name", "cost"), ("type", "number"), ("options", "")],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/fields/delete"),
            &[("field", "cost")],
        )
        .await;
        let (st, fields) = s
            .admin(Method::GET, "/api/v1/projects/demo/fields", None)
            .await;
        assert_eq!(st, 200, "{fields}");
        assert_eq!(
            fields,
            json!([{"name": "team", "label": "Squad", "type": "select",
                    "options": ["red", "blue", "green"], "position": 1}])
        );
        // A select without options is refused next to the fields form, input kept.
        let (st, _, body) = s
            .admin_form(
                &format!("{SETTINGS}/fields"),
                form_body(&[("name", "area"), ("label", "Area"), ("type", "select")]),
            )
            .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("id=\"fields-error\""), "{body}");
        assert!(body.contains("1 to 100 options"), "{body}");
        assert!(body.contains("value=\"area\""), "{body}");

        // Each change went through the domain and appended plan.config_changed.
        assert!(config_events(&s).await >= before + 12);
        s.stop().await;
    }
}

#[tokio::test]
async fn plan_settings_ui_refused_state_delete_and_wip_limits() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (st, it) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/items",
                Some(json!({"type": "story", "title": "Sits in New"})),
            )
            .await;
        assert_eq!(st, 201, "{it}");
        let state = it["state"].as_str().unwrap().to_string();
        let (st, _, body) = s
            .admin_form(
                &format!("{SETTINGS}/states/delete"),
                form_body(&[("workflow", "standard"), ("state", &state)]),
            )
            .await;
        assert_eq!(st, 409, "{body}");
        assert!(body.contains("id=\"wf-standard-error\""), "{body}");
        assert!(
            body.contains("1 item(s) are in state &#34;")
                || body.contains("1 item(s) are in state &quot;"),
            "{body}"
        );
        assert!(
            !body.contains("plan.state_in_use\""),
            "no JSON dump: {body}"
        );
        // A state nobody is in can go.
        post_ok(
            &s,
            &format!("{SETTINGS}/states/delete"),
            &[("workflow", "standard"), ("state", "In review")],
        )
        .await;
        let w = workflows(&s).await;
        assert!(
            !standard(&w)["states"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "In review")
        );

        // WIP limits: one form for all columns; empty clears. The board links to it.
        let (_, board_page) = s.admin_page("/projects/demo/plan/board").await;
        assert!(
            board_page.contains("href=\"/projects/demo/plan/settings#wip\""),
            "{board_page}"
        );
        let (_, page) = s.admin_page(SETTINGS).await;
        assert!(page.contains("id=\"wip-form\""), "{page}");
        let cols = ["New", "Ready", "In progress", "Done"];
        let mut f: Vec<(String, String)> = Vec::new();
        for (i, c) in cols.iter().enumerate() {
            f.push((format!("c.{i}"), c.to_string()));
            let v = if *c == "In progress" { "3" } else { "" };
            f.push((format!("w.{i}"), v.to_string()));
        }
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        post_ok(&s, &format!("{SETTINGS}/wip"), &refs).await;
        let (st, b) = s
            .admin(Method::GET, "/api/v1/projects/demo/board", None)
            .await;
        assert_eq!(st, 200, "{b}");
        let limit = |b: &Value, c: &str| {
            b["columns"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["state"] == c)
                .unwrap()["wip_limit"]
                .clone()
        };
        assert_eq!(limit(&b, "In progress"), json!(3));
        assert_eq!(limit(&b, "New"), Value::Null);
        let (_, page) = s.admin_page(SETTINGS).await;
        assert!(page.contains("value=\"3\""), "{page}");
        // A bad limit is refused before anything is written, the typed value kept.
        let mut bad = f.clone();
        bad[1].1 = "lots".into();
        bad[5].1 = "".into();
        let refs: Vec<(&str, &str)> = bad.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let (st, _, body) = s
            .admin_form(&format!("{SETTINGS}/wip"), form_body(&refs))
            .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("id=\"wip-error\""), "{body}");
        assert!(body.contains("value=\"lots\""), "{body}");
        let (_, b) = s
            .admin(Method::GET, "/api/v1/projects/demo/board", None)
            .await;
        assert_eq!(limit(&b, "In progress"), json!(3), "nothing was written");
        // Clearing.
        let mut clear = f.clone();
        clear[5].1 = "".into();
        let refs: Vec<(&str, &str)> = clear
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        post_ok(&s, &format!("{SETTINGS}/wip"), &refs).await;
        let (_, b) = s
            .admin(Method::GET, "/api/v1/projects/demo/board", None)
            .await;
        assert_eq!(limit(&b, "In progress"), Value::Null);
        s.stop().await;
    }
}

#[tokio::test]
async fn plan_settings_ui_viewers_read_but_cannot_change() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let viewer = s.user("viewer").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/viewer",
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 200);
        let r = s
            .req(Method::GET, SETTINGS, Some(&viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let page = r.text().await.unwrap();
        assert!(page.contains("Types"), "{page}");
        assert!(page.contains("Only maintainers can change them."));
        assert!(!page.contains("id=\"add-type-form\""));
        assert!(!page.contains("id=\"add-field-form\""));
        assert!(!page.contains("Save transitions"));
        let before = workflows(&s).await;
        for (path, fields) in [
            ("types", vec![("name", "Spike"), ("kind", "task")]),
            ("types/rename", vec![("type", "bug"), ("name", "Defect")]),
            ("types/toggle", vec![("type", "bug"), ("enabled", "false")]),
            (
                "states",
                vec![
                    ("workflow", "standard"),
                    ("name", "X"),
                    ("category", "todo"),
                ],
            ),
            (
                "states/update",
                vec![
                    ("workflow", "standard"),
                    ("state", "New"),
                    ("name", "Fresh"),
                    ("category", "todo"),
                ],
            ),
            (
                "states/delete",
                vec![("workflow", "standard"), ("state", "In review")],
            ),
            ("transitions", vec![("workflow", "standard")]),
            ("fields", vec![("name", "team"), ("type", "text")]),
            ("fields/update", vec![("field", "team"), ("label", "T")]),
            ("fields/delete", vec![("field", "team")]),
            ("wip", vec![("c.0", "New"), ("w.0", "2")]),
        ] {
            let r = s
                .req(Method::POST, &format!("{SETTINGS}/{path}"), Some(&viewer))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(&fields))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 403, "{path}");
        }
        assert_eq!(workflows(&s).await, before, "nothing changed");
        s.stop().await;
    }
}

#[tokio::test]
async fn plan_settings_ui_custom_fields_in_item_forms() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        s.user("carol").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/carol",
                Some(json!({"role": "developer"})),
            )
            .await;
        assert_eq!(st, 200);
        for (name, ty, options) in [
            ("team", "select", "red, blue"),
            ("cost", "number", ""),
            ("owner", "user", ""),
            ("due_on", "date", ""),
            ("note", "text", ""),
        ] {
            post_ok(
                &s,
                &format!("{SETTINGS}/fields"),
                &[("name", name), ("type", ty), ("options", options)],
            )
            .await;
        }
        // The new-item form has one input per field, of the right kind.
        let (st, page) = s.admin_page("/projects/demo/plan").await;
        assert_eq!(st, 200);
        assert!(
            page.contains("<select id=\"new-cf-team\" name=\"cf.team\""),
            "{page}"
        );
        assert!(page.contains("<option value=\"blue\">blue</option>"));
        assert!(page.contains("type=\"number\" step=\"any\" id=\"new-cf-cost\""));
        assert!(page.contains("<select id=\"new-cf-owner\" name=\"cf.owner\""));
        assert!(page.contains("<option value=\"carol\">carol</option>"));
        assert!(page.contains("type=\"date\" id=\"new-cf-due_on\""));
        assert!(page.contains("id=\"new-cf-note\" name=\"cf.note\""));

        // A bad number: the form again with the message, keeping everything typed.
        let (st, _, body) = s
            .admin_form(
                "/projects/demo/plan/items",
                form_body(&[
                    ("type", "story"),
                    ("title", "Keep me"),
                    ("cf.team", "blue"),
                    ("cf.cost", "twelve"),
                    ("cf.note", "typed note"),
                ]),
            )
            .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("id=\"new-cf-cost-error\""), "{body}");
        assert!(body.contains("is not a number"), "{body}");
        assert!(body.contains("value=\"twelve\""));
        assert!(body.contains("value=\"Keep me\""));
        assert!(body.contains("value=\"typed note\""));
        assert!(body.contains("<option value=\"blue\" selected>"));
        let (_, list) = s
            .admin(Method::GET, "/api/v1/projects/demo/items", None)
            .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

        // Created with values.
        let (st, loc, body) = s
            .admin_form(
                "/projects/demo/plan/items",
                form_body(&[
                    ("type", "story"),
                    ("title", "With fields"),
                    ("cf.team", "blue"),
                    ("cf.cost", "12.5"),
                    ("cf.owner", "carol"),
                    ("cf.due_on", "2026-12-01"),
                    ("cf.note", ""),
                ]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(loc, "/projects/demo/plan/items/DEMO-1");
        let it = item(&s, "DEMO-1").await;
        assert_eq!(
            it["fields"],
            json!({"team": "blue", "cost": "12.5", "owner": "carol", "due_on": "2026-12-01"})
        );

        // The item page shows the values and the edit form holds them.
        let (_, page) = s.admin_page("/projects/demo/plan/items/DEMO-1").await;
        assert!(page.contains("<option value=\"blue\" selected>"), "{page}");
        assert!(page.contains("id=\"edit-cf-cost\" name=\"cf.cost\" value=\"12.5\""));
        assert!(page.contains("<option value=\"carol\" selected>"));
        assert!(page.contains("id=\"edit-cf-due_on\" name=\"cf.due_on\" value=\"2026-12-01\""));
        assert!(
            page.contains("<dt class=\"custom-field\">team</dt><dd>blue</dd>"),
            "{page}"
        );

        // Edit: change some, clear one.
        let version = it["version"].as_i64().unwrap().to_string();
        let edit = |cost: &str, team: &str| {
            form_body(&[
                ("version", &version),
                ("title", "With fields"),
                ("description", ""),
                ("priority", "none"),
                ("estimate", ""),
                ("assignee", ""),
                ("labels", ""),
                ("cf.team", team),
                ("cf.cost", cost),
                ("cf.owner", ""),
                ("cf.due_on", "2026-12-24"),
                ("cf.note", "hello"),
            ])
        };
        // A bad number on the edit form: 422, the form open with the message and input.
        let (st, _, body) = s
            .admin_form("/projects/demo/plan/items/DEMO-1/edit", edit("1e", "red"))
            .await;
        assert_eq!(st, 422, "{body}");
        assert!(body.contains("id=\"edit-cf-cost-error\""), "{body}");
        assert!(body.contains("name=\"cf.cost\" value=\"1e\""));
        assert!(body.contains("<option value=\"red\" selected>"));
        assert_eq!(item(&s, "DEMO-1").await["fields"]["team"], "blue");
        let (st, _, body) = s
            .admin_form("/projects/demo/plan/items/DEMO-1/edit", edit("7", "red"))
            .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(
            item(&s, "DEMO-1").await["fields"],
            json!({"team": "red", "cost": "7", "due_on": "2026-12-24", "note": "hello"})
        );
        // An option removed later stays on the item, is still shown selected in the form, and
        // does not block saving other changes.
        post_ok(
            &s,
            &format!("{SETTINGS}/fields/update"),
            &[
                ("field", "team"),
                ("label", "team"),
                ("options", "blue\ngreen"),
            ],
        )
        .await;
        let it = item(&s, "DEMO-1").await;
        let (_, page) = s.admin_page("/projects/demo/plan/items/DEMO-1").await;
        assert!(page.contains("<option value=\"red\" selected>"), "{page}");
        let version = it["version"].as_i64().unwrap().to_string();
        let (st, _, body) = s
            .admin_form(
                "/projects/demo/plan/items/DEMO-1/edit",
                form_body(&[
                    ("version", &version),
                    ("title", "Renamed"),
                    ("priority", "none"),
                    ("cf.team", "red"),
                    ("cf.cost", "7"),
                    ("cf.due_on", "2026-12-24"),
                    ("cf.note", "hello"),
                ]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        let it = item(&s, "DEMO-1").await;
        assert_eq!(it["title"], "Renamed");
        assert_eq!(it["fields"]["team"], "red");
        s.stop().await;
    }
}

#[tokio::test]
async fn plan_settings_ui_xss_in_fields_is_inert() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let evil = "<script>alert(1)</script>";
        let evil_attr = "\"><img src=x onerror=alert(2)>";
        let options = format!("{evil}\n{evil_attr}\nplain");
        post_ok(
            &s,
            &format!("{SETTINGS}/fields"),
            &[
                ("name", "area"),
                ("label", "<b onmouseover=alert(3)>Area</b>"),
                ("type", "select"),
                ("options", &options),
            ],
        )
        .await;
        post_ok(
            &s,
            &format!("{SETTINGS}/fields"),
            &[("name", "note"), ("label", "Note"), ("type", "text")],
        )
        .await;
        let (st, loc, body) = s
            .admin_form(
                "/projects/demo/plan/items",
                form_body(&[
                    ("type", "story"),
                    ("title", "XSS"),
                    ("cf.area", evil_attr),
                    ("cf.note", evil),
                ]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(loc, "/projects/demo/plan/items/DEMO-1");
        assert_eq!(item(&s, "DEMO-1").await["fields"]["area"], evil_attr);
        for path in [
            SETTINGS,
            "/projects/demo/plan",
            "/projects/demo/plan/items/DEMO-1",
        ] {
            let (st, page) = s.admin_page(path).await;
            assert_eq!(st, 200, "{path}");
            for raw in [
                "<script>alert(1)",
                "<img src=x",
                "<b onmouseover",
                "\"><img",
            ] {
                assert!(!page.contains(raw), "{path} contains {raw}: {page}");
            }
            // Shown, escaped (askama writes numeric entities).
            assert!(
                page.contains("&#60;script&#62;alert(1)")
                    || page.contains("&lt;script&gt;alert(1)"),
                "{path}: {page}"
            );
        }
        s.stop().await;
    }
}

/// A signed-in browser session: the forms carry the page's CSRF token, and the notice of a
/// change shows once on the page the redirect leads to.
#[tokio::test]
async fn plan_settings_ui_browser_session_and_csrf() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let login = s
            .req(Method::POST, "/login", None)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("name", "admin"),
                ("password", "admin-password"),
                ("next", "/projects"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status().as_u16(), 303);
        let cookie = login
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let page = s
            .req(Method::GET, SETTINGS, None)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let marker = "name=\"_csrf\" value=\"";
        let at = page.find(marker).expect("forms carry the CSRF token") + marker.len();
        let csrf = page[at..].split('"').next().unwrap().to_string();
        assert!(!csrf.is_empty());
        let post = |fields: Vec<(&'static str, String)>| {
            let refs: Vec<(&str, &str)> = fields.iter().map(|(a, b)| (*a, b.as_str())).collect();
            s.req(Method::POST, &format!("{SETTINGS}/fields"), None)
                .header("cookie", &cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(&refs))
        };
        // Without the token the form is refused and nothing is added.
        let r = post(vec![("name", "team".into()), ("type", "text".into())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let r = post(vec![
            ("_csrf", csrf.clone()),
            ("name", "team".into()),
            ("type", "text".into()),
        ])
        .send()
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let flash = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .find(|c| c.starts_with("ouro_flash="))
            .expect("a notice for the next page");
        let page = s
            .req(Method::GET, SETTINGS, None)
            .header("cookie", format!("{cookie}; {flash}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Added the custom field"), "{page}");
        assert!(page.contains("data-field=\"team\""), "{page}");
        s.stop().await;
    }
}
